//! Where a file lives: an object in a bucket, or a URL.

use std::fmt;

/// An object inside a bucket: `s3://bucket/key`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectLocation {
    pub bucket: String,
    pub key: String,
}

impl ObjectLocation {
    pub fn new(bucket: impl Into<String>, key: impl Into<String>) -> Self {
        ObjectLocation {
            bucket: bucket.into(),
            key: key.into(),
        }
    }

    /// Parses `s3://bucket/key`.
    pub fn parse_s3_url(url: &str) -> Option<Self> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, key) = rest.split_once('/')?;
        (!bucket.is_empty() && !key.is_empty()).then(|| ObjectLocation::new(bucket, key))
    }

    /// The file name part of the key (`dir/Patient.ndjson.gz` -> `Patient.ndjson.gz`).
    pub fn file_name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }
}

/// Parses `s3://name[/prefix]` (a bucket, or a place in one) into the bucket's name and
/// the prefix as written (possibly empty); 400 when it is not of that form.
pub fn parse_s3_prefix(url: &str) -> crate::error::Result<(String, String)> {
    let bad = crate::error::Error::BadRequest;
    let rest = url.strip_prefix("s3://").ok_or_else(|| {
        bad(format!(
            "bucket must look like s3://name[/prefix] (got {url:?})"
        ))
    })?;
    let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if name.is_empty() {
        return Err(bad("bucket name is empty".into()));
    }
    Ok((name.to_string(), prefix.to_string()))
}

impl fmt::Display for ObjectLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// Where a file lives: an object in a bucket, or an `https://` URL.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    S3(ObjectLocation),
    Url(String),
}

impl Location {
    /// The file name part (`.../Patient.ndjson.gz` -> `Patient.ndjson.gz`), without a
    /// URL's query string.
    pub fn file_name(&self) -> &str {
        match self {
            Location::S3(o) => o.file_name(),
            Location::Url(u) => {
                let path = u.split(['?', '#']).next().unwrap_or(u);
                path.rsplit('/').next().unwrap_or(path)
            }
        }
    }
}

impl From<ObjectLocation> for Location {
    fn from(o: ObjectLocation) -> Self {
        Location::S3(o)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::S3(o) => o.fmt(f),
            // Never the query string: presigned URLs carry credentials there.
            Location::Url(u) => f.write_str(u.split(['?', '#']).next().unwrap_or(u)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_never_show_a_query() {
        let o = ObjectLocation::parse_s3_url("s3://b/dir/Patient.ndjson.gz").unwrap();
        assert_eq!(
            (o.bucket.as_str(), o.file_name()),
            ("b", "Patient.ndjson.gz")
        );
        assert_eq!(
            parse_s3_prefix("s3://b/dir/sub/").unwrap(),
            ("b".to_string(), "dir/sub/".to_string())
        );
        assert_eq!(
            parse_s3_prefix("s3://b").unwrap(),
            ("b".to_string(), String::new())
        );
        for bad in ["s3://", "s3:///dir", "https://b/dir", "b/dir"] {
            assert!(parse_s3_prefix(bad).is_err(), "{bad}");
        }
        for bad in ["s3://b", "s3:///k", "s3://b/", "https://b/k"] {
            assert!(ObjectLocation::parse_s3_url(bad).is_none(), "{bad}");
        }
        let u = Location::Url("https://h/p/Obs.ndjson?sig=secret#f".into());
        assert_eq!(u.to_string(), "https://h/p/Obs.ndjson");
        assert_eq!(u.file_name(), "Obs.ndjson");
    }
}
