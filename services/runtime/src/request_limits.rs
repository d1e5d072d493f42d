//! Limits every request must keep, checked on the raw protobuf before any
//! handler runs, for every method (the API's descriptor set says which
//! fields are strings and which are messages): no string longer than
//! [`MAX_STRING_BYTES`], no repeated field with more than
//! [`MAX_REPEATED`] elements, no nesting deeper than [`MAX_DEPTH`]. Fields
//! have tighter rules of their own (names, decimals, ids) in the handlers;
//! these bound what any field can cost. A breach is INVALID_ARGUMENT naming
//! the field path.

use std::collections::HashMap;

use prost::Message;

use crate::error::ApiError;

pub const MAX_STRING_BYTES: usize = 1024;
pub const MAX_REPEATED: usize = 500;
pub const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone)]
enum Kind {
    String,
    Message(String),
    Other,
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    kind: Kind,
    repeated: bool,
}

/// The shapes of the API's messages and the input type of each method.
#[derive(Debug, Default)]
pub struct RequestLimits {
    messages: HashMap<String, HashMap<u32, Field>>,
    inputs: HashMap<String, String>,
}

impl RequestLimits {
    /// From the compiled-in descriptor set.
    pub fn from_descriptors() -> Self {
        use prost_types::field_descriptor_proto::{Label, Type};

        let set = prost_types::FileDescriptorSet::decode(qapmap_proto::FILE_DESCRIPTOR_SET)
            .expect("the compiled-in descriptor set decodes");
        let mut limits = Self::default();
        fn add(limits: &mut RequestLimits, scope: &str, message: &prost_types::DescriptorProto) {
            let name = format!("{scope}.{}", message.name());
            let fields = message
                .field
                .iter()
                .map(|field| {
                    let kind = match field.r#type() {
                        Type::String => Kind::String,
                        Type::Message => Kind::Message(field.type_name().to_owned()),
                        _ => Kind::Other,
                    };
                    let shape = Field {
                        name: field.name().to_owned(),
                        kind,
                        repeated: field.label() == Label::Repeated,
                    };
                    (field.number() as u32, shape)
                })
                .collect();
            limits.messages.insert(name.clone(), fields);
            for nested in &message.nested_type {
                add(limits, &name, nested);
            }
        }
        for file in &set.file {
            let scope = format!(".{}", file.package());
            for message in &file.message_type {
                add(&mut limits, &scope, message);
            }
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    limits.inputs.insert(path, method.input_type().to_owned());
                }
            }
        }
        limits
    }

    /// Checks the encoded request of `path`. Unknown methods and types pass
    /// (the policy refuses unknown methods first); bytes that are not
    /// protobuf are left to the decoder's own error.
    pub fn check(&self, path: &str, message: &[u8]) -> Result<(), ApiError> {
        let Some(input) = self.inputs.get(path) else {
            return Ok(());
        };
        self.check_message(input, message, "", 0)
    }

    fn check_message(
        &self,
        type_name: &str,
        mut bytes: &[u8],
        prefix: &str,
        depth: usize,
    ) -> Result<(), ApiError> {
        if depth > MAX_DEPTH {
            return Err(ApiError::invalid(
                prefix.trim_end_matches('.'),
                format!("nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        let Some(fields) = self.messages.get(type_name) else {
            return Ok(());
        };
        let mut counts: HashMap<u32, usize> = HashMap::new();
        while !bytes.is_empty() {
            let Some((number, value)) = next_field(&mut bytes) else {
                // Malformed: the decoder reports it.
                return Ok(());
            };
            let Some(field) = fields.get(&number) else {
                continue;
            };
            let path = format!("{prefix}{}", field.name);
            if field.repeated {
                let count = counts.entry(number).or_default();
                *count += 1;
                if *count > MAX_REPEATED {
                    return Err(ApiError::invalid(
                        path,
                        format!("must have at most {MAX_REPEATED} elements"),
                    ));
                }
            }
            match (&field.kind, value) {
                (Kind::String, Some(value)) if value.len() > MAX_STRING_BYTES => {
                    return Err(ApiError::invalid(
                        path,
                        format!("must be at most {MAX_STRING_BYTES} bytes"),
                    ));
                }
                (Kind::Message(nested), Some(value)) => {
                    self.check_message(nested, value, &format!("{path}."), depth + 1)?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The next field's number and, when length-delimited, its bytes.
fn next_field<'a>(bytes: &mut &'a [u8]) -> Option<(u32, Option<&'a [u8]>)> {
    let key = varint(bytes)?;
    let number = u32::try_from(key >> 3).ok()?;
    match key & 7 {
        0 => {
            varint(bytes)?;
            Some((number, None))
        }
        1 => {
            *bytes = bytes.get(8..)?;
            Some((number, None))
        }
        5 => {
            *bytes = bytes.get(4..)?;
            Some((number, None))
        }
        2 => {
            let length = usize::try_from(varint(bytes)?).ok()?;
            let value = bytes.get(..length)?;
            *bytes = &bytes[length..];
            Some((number, Some(value)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qapmap_proto::equity::v1 as equity;
    use qapmap_proto::ledger::v1 as ledger;

    const GRANT: &str = "/qapmap.equity.v1.EquityService/GrantAward";

    fn field_of(error: ApiError) -> String {
        match error {
            ApiError::InvalidArgument { field, .. } => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn a_long_string_anywhere_is_refused_by_its_path() {
        let limits = RequestLimits::from_descriptors();
        let fine = equity::GrantAwardRequest {
            company_id: "c".repeat(36),
            ..Default::default()
        };
        limits.check(GRANT, &fine.encode_to_vec()).expect("fine");
        let long = equity::GrantAwardRequest {
            request_id: "r".repeat(MAX_STRING_BYTES + 1),
            ..Default::default()
        };
        assert_eq!(
            field_of(limits.check(GRANT, &long.encode_to_vec()).unwrap_err()),
            "request_id"
        );
    }

    #[test]
    fn nested_strings_and_repeated_fields_are_bounded() {
        let limits = RequestLimits::from_descriptors();
        let path = "/qapmap.ledger.v1.LedgerService/PostEntry";
        let line = ledger::EntryLine {
            account: Some(ledger::AccountRef {
                owner: Some(ledger::account_ref::Owner::StakeholderId(
                    "a".repeat(MAX_STRING_BYTES + 1),
                )),
                ..Default::default()
            }),
            ..Default::default()
        };
        let request = ledger::PostEntryRequest {
            lines: vec![line],
            ..Default::default()
        };
        assert_eq!(
            field_of(limits.check(path, &request.encode_to_vec()).unwrap_err()),
            "lines.account.stakeholder_id"
        );
        let request = ledger::PostEntryRequest {
            lines: vec![ledger::EntryLine::default(); MAX_REPEATED + 1],
            ..Default::default()
        };
        assert_eq!(
            field_of(limits.check(path, &request.encode_to_vec()).unwrap_err()),
            "lines"
        );
    }
}
