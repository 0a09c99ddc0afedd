//! AWS Secrets Manager: the one place secrets are read (the database password, the
//! admin client). Values are never logged.

use crate::error::{Error, Result};

/// The string value of secret `arn`; `what` names it in errors ("the database secret").
pub async fn secret_string(arn: &str, what: &str) -> Result<String> {
    let conf = crate::sources::aws::own_config()
        .await
        .map_err(|e| Error::Internal(format!("cannot read {what}: {e}")))?;
    let out = aws_sdk_secretsmanager::Client::new(&conf)
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| {
            Error::Internal(format!(
                "cannot read {what}: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(e)
            ))
        })?;
    out.secret_string()
        .map(str::to_string)
        .ok_or_else(|| Error::Internal(format!("{what} has no string value")))
}
