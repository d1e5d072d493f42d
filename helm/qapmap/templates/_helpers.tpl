{{/* Chart name, truncated to what label values allow. */}}
{{- define "qapmap.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped prefix for every object name. */}}
{{- define "qapmap.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "qapmap.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: qapmap
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Selects every QapMap pod of this release. */}}
{{- define "qapmap.podSelector" -}}
app.kubernetes.io/part-of: qapmap
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "qapmap.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "qapmap.databaseSecret" -}}
{{- .Values.postgres.existingSecret | default (printf "%s-database" (include "qapmap.fullname" .)) -}}
{{- end -}}

{{- define "qapmap.jwtSecret" -}}
{{- .Values.jwt.existingSecret | default (printf "%s-jwt-jwks" (include "qapmap.fullname" .)) -}}
{{- end -}}

{{/* Shutdown grace plus the preStop pause plus 15 s, in whole seconds. */}}
{{- define "qapmap.terminationGracePeriodSeconds" -}}
{{- add (div (add .Values.shutdown.graceMs 999) 1000) .Values.shutdown.preStopSleepSeconds 15 -}}
{{- end -}}
