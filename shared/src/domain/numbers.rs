//! Integers in JSON bodies: a whole number written as a float (`8192.0`) is the integer it
//! names, as JSON Schema's `integer` says; a fraction or a value out of range is refused.

use serde::de::Error;
use serde::{Deserialize, Deserializer};

fn whole<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    if let Some(i) = n.as_i64() {
        return Ok(i128::from(i));
    }
    if let Some(u) = n.as_u64() {
        return Ok(i128::from(u));
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i128),
        _ => Err(D::Error::custom(format!("expected a whole number, got {n}"))),
    }
}

fn fit<'de, T: TryFrom<i128>, D: Deserializer<'de>>(value: i128) -> Result<T, D::Error> {
    T::try_from(value).map_err(|_| D::Error::custom(format!("{value} is out of range")))
}

/// A whole number of type `T`.
pub fn integer<'de, T: TryFrom<i128>, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    fit::<T, D>(whole(d)?)
}

/// `null` or a whole number.
pub fn optional_integer<'de, T: TryFrom<i128>, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
    #[derive(Deserialize)]
    struct Whole(#[serde(deserialize_with = "whole")] i128);
    match Option::<Whole>::deserialize(d)? {
        None => Ok(None),
        Some(Whole(v)) => fit::<T, D>(v).map(Some),
    }
}

/// A field that is present (`null` or a whole number) or not: see `present` in the use cases.
pub fn present_integer<'de, T: TryFrom<i128>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    optional_integer(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(deserialize_with = "integer")]
        n: u32,
        #[serde(default, deserialize_with = "present_integer")]
        m: Option<Option<i64>>,
    }

    #[test]
    fn whole_floats_are_integers_and_fractions_are_not() {
        let b: Body = serde_json::from_str(r#"{"n": 8192.0, "m": 7}"#).unwrap();
        assert_eq!((b.n, b.m), (8192, Some(Some(7))));
        let b: Body = serde_json::from_str(r#"{"n": 1, "m": null}"#).unwrap();
        assert_eq!(b.m, Some(None));
        let b: Body = serde_json::from_str(r#"{"n": 1}"#).unwrap();
        assert_eq!(b.m, None);
        assert!(serde_json::from_str::<Body>(r#"{"n": 1.5}"#).is_err());
        assert!(serde_json::from_str::<Body>(r#"{"n": -1}"#).is_err());
        assert!(serde_json::from_str::<Body>(r#"{"n": 4294967296}"#).is_err());
        assert!(serde_json::from_str::<Body>(r#"{"n": "3"}"#).is_err());
    }
}
