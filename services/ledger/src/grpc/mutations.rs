//! The mutating calls: parse, open (idempotency), run the command, close.

use qapmap_proto::ledger::v1 as proto;
use qapmap_runtime::decimal::{self, Money};
use qapmap_runtime::idempotency::RequestKey;
use qapmap_runtime::{ApiError, date, ids};
use tonic::Response;

use super::LedgerApi;
use crate::commands::{self, Movement};
use crate::convert::{self, entry_to_proto};
use crate::holds;
use crate::journal::{self, Cause, Line, NewEntry};

type ApiResponse<T> = Result<Response<T>, ApiError>;

macro_rules! method {
    ($name:literal) => {
        concat!("/qapmap.ledger.v1.LedgerService/", $name)
    };
}

fn request_cause(request_id: &str) -> Cause {
    Cause::Request {
        request_id: request_id.to_owned(),
    }
}

fn movement(
    class: &str,
    quantity: Option<&qapmap_proto::common::v1::Decimal>,
    effective: Option<&qapmap_proto::common::v1::Date>,
) -> Result<Movement, ApiError> {
    Ok(Movement {
        share_class_id: ids::parse("share_class_id", class)?,
        quantity: decimal::positive("quantity", quantity)?,
        effective_date: date::effective_or_today("effective_date", effective)?,
    })
}

impl LedgerApi {
    pub(super) async fn issue(
        &self,
        request: proto::IssueSharesRequest,
    ) -> ApiResponse<proto::IssueSharesResponse> {
        let company_id = ids::parse("company_id", &request.company_id)?;
        let key = RequestKey::new(
            company_id,
            &request.request_id,
            method!("IssueShares"),
            &request,
        )?;
        let stakeholder_id = ids::parse("stakeholder_id", &request.stakeholder_id)?;
        let movement = movement(
            &request.share_class_id,
            request.quantity.as_ref(),
            request.effective_date.as_ref(),
        )?;
        let price = Money::optional("price_per_share", request.price_per_share.as_ref())?;
        let (mut tx, stored) = self.open(&key).await?;
        if let Some(stored) = stored {
            return Ok(Response::new(stored));
        }
        let entry = commands::issue_shares(
            &mut tx,
            &self.subjects,
            company_id,
            request_cause(&request.request_id),
            stakeholder_id,
            movement,
            price,
        )
        .await?;
        self.close(
            tx,
            &key,
            proto::IssueSharesResponse {
                entry: Some(entry_to_proto(&entry)),
            },
        )
        .await
    }

    pub(super) async fn transfer(
        &self,
        request: proto::TransferSharesRequest,
    ) -> ApiResponse<proto::TransferSharesResponse> {
        let company_id = ids::parse("company_id", &request.company_id)?;
        let key = RequestKey::new(
            company_id,
            &request.request_id,
            method!("TransferShares"),
            &request,
        )?;
        let from = ids::parse("from_stakeholder_id", &request.from_stakeholder_id)?;
        let to = ids::parse("to_stakeholder_id", &request.to_stakeholder_id)?;
        if from == to {
            return Err(ApiError::invalid(
                "to_stakeholder_id",
                "must differ from from_stakeholder_id",
            ));
        }
        let movement = movement(
            &request.share_class_id,
            request.quantity.as_ref(),
            request.effective_date.as_ref(),
        )?;
        let (mut tx, stored) = self.open(&key).await?;
        if let Some(stored) = stored {
            return Ok(Response::new(stored));
        }
        let entry = commands::transfer_shares(
            &mut tx,
            &self.subjects,
            company_id,
            request_cause(&request.request_id),
            (from, to),
            movement,
        )
        .await?;
        self.close(
            tx,
            &key,
            proto::TransferSharesResponse {
                entry: Some(entry_to_proto(&entry)),
            },
        )
        .await
    }

    pub(super) async fn cancel(
        &self,
        request: proto::CancelSharesRequest,
    ) -> ApiResponse<proto::CancelSharesResponse> {
        let company_id = ids::parse("company_id", &request.company_id)?;
        let key = RequestKey::new(
            company_id,
            &request.request_id,
            method!("CancelShares"),
            &request,
        )?;
        let stakeholder_id = ids::parse("stakeholder_id", &request.stakeholder_id)?;
        let movement = movement(
            &request.share_class_id,
            request.quantity.as_ref(),
            request.effective_date.as_ref(),
        )?;
        let (mut tx, stored) = self.open(&key).await?;
        if let Some(stored) = stored {
            return Ok(Response::new(stored));
        }
        let entry = commands::cancel_shares(
            &mut tx,
            &self.subjects,
            company_id,
            request_cause(&request.request_id),
            stakeholder_id,
            movement,
        )
        .await?;
        self.close(
            tx,
            &key,
            proto::CancelSharesResponse {
                entry: Some(entry_to_proto(&entry)),
            },
        )
        .await
    }

    pub(super) async fn retire(
        &self,
        request: proto::RetireTreasurySharesRequest,
    ) -> ApiResponse<proto::RetireTreasurySharesResponse> {
        let company_id = ids::parse("company_id", &request.company_id)?;
        let key = RequestKey::new(
            company_id,
            &request.request_id,
            method!("RetireTreasuryShares"),
            &request,
        )?;
        let movement = movement(
            &request.share_class_id,
            request.quantity.as_ref(),
            request.effective_date.as_ref(),
        )?;
        let (mut tx, stored) = self.open(&key).await?;
        if let Some(stored) = stored {
            return Ok(Response::new(stored));
        }
        let entry = commands::retire_treasury_shares(
            &mut tx,
            &self.subjects,
            company_id,
            request_cause(&request.request_id),
            movement,
        )
        .await?;
        self.close(
            tx,
            &key,
            proto::RetireTreasurySharesResponse {
                entry: Some(entry_to_proto(&entry)),
            },
        )
        .await
    }

    pub(super) async fn adjust_authorized(
        &self,
        request: proto::AdjustAuthorizedSharesRequest,
    ) -> ApiResponse<proto::AdjustAuthorizedSharesResponse> {
        let company_id = ids::parse("company_id", &request.company_id)?;
        let key = RequestKey::new(
            company_id,
            &request.request_id,
            method!("AdjustAuthorizedShares"),
            &request,
        )?;
        let class = ids::parse("share_class_id", &request.share_class_id)?;
        let authorized = decimal::non_negative(
            "new_authorized_shares",
            request.new_authorized_shares.as_ref(),
        )?;
        let effective_date =
            date::effective_or_today("effective_date", request.effective_date.as_ref())?;
        let (mut tx, stored) = self.open(&key).await?;
        if let Some(stored) = stored {
            return Ok(Response::new(stored));
        }
        let entry = commands::adjust_authorized_shares(
            &mut tx,
            &self.subjects,
            company_id,
            request_cause(&request.request_id),
            class,
            authorized,
            effective_date,
        )
        .await?;
        self.close(
            tx,
            &key,
            proto::AdjustAuthorizedSharesResponse {
                entry: Some(entry_to_proto(&entry)),
            },
        )
        .await
    }

    pub(super) async fn reverse(
        &self,
        request: proto::ReverseEntryRequest,
    ) -> ApiResponse<proto::ReverseEntryResponse> {
        let company_id = ids::parse("company_id", &request.company_id)?;
        let key = RequestKey::new(
            company_id,
            &request.request_id,
            method!("ReverseEntry"),
            &request,
        )?;
        let entry_id = ids::parse("entry_id", &request.entry_id)?;
        let (mut tx, stored) = self.open(&key).await?;
        if let Some(stored) = stored {
            return Ok(Response::new(stored));
        }
        let entry = commands::reverse_entry(
            &mut tx,
            &self.subjects,
            company_id,
            request_cause(&request.request_id),
            entry_id,
            request.memo.clone(),
        )
        .await?;
        self.close(
            tx,
            &key,
            proto::ReverseEntryResponse {
                reversal: Some(entry_to_proto(&entry)),
            },
        )
        .await
    }

    pub(super) async fn post_general(
        &self,
        request: proto::PostEntryRequest,
    ) -> ApiResponse<proto::PostEntryResponse> {
        let company_id = ids::parse("company_id", &request.company_id)?;
        let key = RequestKey::new(
            company_id,
            &request.request_id,
            method!("PostEntry"),
            &request,
        )?;
        let new = parse_general_entry(&request)?;
        let (mut tx, stored) = self.open(&key).await?;
        if let Some(stored) = stored {
            return Ok(Response::new(stored));
        }
        let entry = journal::post(&mut tx, &self.subjects, company_id, new).await?;
        self.close(
            tx,
            &key,
            proto::PostEntryResponse {
                entry: Some(entry_to_proto(&entry)),
            },
        )
        .await
    }

    pub(super) async fn place(
        &self,
        request: proto::PlaceHoldRequest,
    ) -> ApiResponse<proto::PlaceHoldResponse> {
        let company_id = ids::parse("company_id", &request.company_id)?;
        let key = RequestKey::new(
            company_id,
            &request.request_id,
            method!("PlaceHold"),
            &request,
        )?;
        let account = convert::parse_account("account", request.account.as_ref())?;
        let quantity = decimal::positive("quantity", request.quantity.as_ref())?;
        let (mut tx, stored) = self.open(&key).await?;
        if let Some(stored) = stored {
            return Ok(Response::new(stored));
        }
        let cause = request_cause(&request.request_id).to_stored();
        let hold = holds::place(&mut tx, company_id, account, quantity, &cause).await?;
        self.close(
            tx,
            &key,
            proto::PlaceHoldResponse {
                hold: Some(convert::hold_to_proto(&hold)),
            },
        )
        .await
    }

    pub(super) async fn release(
        &self,
        request: proto::ReleaseHoldRequest,
    ) -> ApiResponse<proto::ReleaseHoldResponse> {
        let company_id = ids::parse("company_id", &request.company_id)?;
        let key = RequestKey::new(
            company_id,
            &request.request_id,
            method!("ReleaseHold"),
            &request,
        )?;
        let hold_id = ids::parse("hold_id", &request.hold_id)?;
        let (mut tx, stored) = self.open(&key).await?;
        if let Some(stored) = stored {
            return Ok(Response::new(stored));
        }
        let hold = holds::release(&mut tx, company_id, hold_id).await?;
        self.close(
            tx,
            &key,
            proto::ReleaseHoldResponse {
                hold: Some(convert::hold_to_proto(&hold)),
            },
        )
        .await
    }
}

/// A general entry: lines of the caller's choosing, but never the charter
/// (authorized shares change only through AdjustAuthorizedShares).
fn parse_general_entry(request: &proto::PostEntryRequest) -> Result<NewEntry, ApiError> {
    let entry_type = convert::parse_entry_type(request.entry_type)?;
    let mut lines = Vec::with_capacity(request.lines.len());
    for (index, line) in request.lines.iter().enumerate() {
        let account =
            convert::parse_account(&format!("lines[{index}].account"), line.account.as_ref())?;
        if account.owner
            == crate::accounts::Owner::System(crate::accounts::SystemAccount::Authorized)
        {
            return Err(ApiError::invalid(
                format!("lines[{index}].account.system"),
                "the charter account moves only through AdjustAuthorizedShares",
            ));
        }
        let amount = decimal::required(&format!("lines[{index}].amount"), line.amount.as_ref())?;
        lines.push(Line { account, amount });
    }
    Ok(NewEntry {
        entry_type,
        effective_date: date::effective_or_today(
            "effective_date",
            request.effective_date.as_ref(),
        )?,
        cause: request_cause(&request.request_id),
        lines,
        reverses_entry_id: None,
        consumes_hold_id: None,
        memo: request.memo.clone(),
    })
}
