//! Canonical JSON: how conformance traces write Squall's messages, timers, configurations and
//! durable state, so that a program in any language reads and writes them without knowing
//! serde's conventions for Rust types.
//!
//! It is serde's JSON data model with three changes, each removing something a reimplementer
//! would otherwise have to guess:
//!
//! - **Bytes** are lowercase hex strings (`"6869"` for `hi`), not arrays of numbers;
//! - **Durations** are integer microseconds (`10000` for 10 ms), not `{"secs":S,"nanos":N}`;
//!   one that is not a whole number of microseconds is refused;
//! - **No ambiguous null**: `None` is `null` and `Some(x)` is `x`, so a `Some` whose value
//!   is itself written `null` (an option of an option, `Some(())`) is refused — the protocol
//!   types name such cases with an enum instead.
//!
//! Everything else is as serde writes JSON: structs as objects in field order, enums
//! externally tagged (`{"Put":{...}}`, a unit variant as its name), tuples and sequences as
//! arrays, newtypes as their content, maps as objects whose integer keys are decimal strings.

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::ser::{self, Serialize};
use serde_json::{Map, Number, Value};

/// The error of both directions: serde_json's, whose messages say what was refused.
pub type Error = serde_json::Error;

/// `value` in canonical JSON.
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, Error> {
    value.serialize(Canon)
}

/// Reads a `T` from canonical JSON.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, Error> {
    T::deserialize(CanonDe(value.clone()))
}

const DURATION: &str = "Duration";
const MICROS_PER_SEC: u64 = 1_000_000;

fn error<E: ser::Error>(what: impl std::fmt::Display) -> E {
    E::custom(what)
}

/// The serializer: every value becomes a [`Value`].
struct Canon;

impl ser::Serializer for Canon {
    type Ok = Value;
    type Error = Error;
    type SerializeSeq = Compound;
    type SerializeTuple = Compound;
    type SerializeTupleStruct = Compound;
    type SerializeTupleVariant = Compound;
    type SerializeMap = Compound;
    type SerializeStruct = Compound;
    type SerializeStructVariant = Compound;

    fn serialize_bool(self, v: bool) -> Result<Value, Error> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, Error> {
        Ok(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<Value, Error> {
        Ok(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<Value, Error> {
        Ok(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<Value, Error> {
        Ok(v.into())
    }
    fn serialize_u8(self, v: u8) -> Result<Value, Error> {
        Ok(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<Value, Error> {
        Ok(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<Value, Error> {
        Ok(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<Value, Error> {
        Ok(v.into())
    }
    fn serialize_f32(self, v: f32) -> Result<Value, Error> {
        self.serialize_f64(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<Value, Error> {
        Number::from_f64(v).map(Value::Number).ok_or_else(|| error(format!("{v} is not finite")))
    }
    fn serialize_char(self, v: char) -> Result<Value, Error> {
        Ok(Value::String(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Value, Error> {
        Ok(Value::String(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, Error> {
        Ok(Value::String(hex::encode(v)))
    }
    fn serialize_none(self) -> Result<Value, Error> {
        Ok(Value::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, Error> {
        match value.serialize(Canon)? {
            Value::Null => Err(error("ambiguous null: Some of a value that is itself null")),
            v => Ok(v),
        }
    }
    fn serialize_unit(self) -> Result<Value, Error> {
        Ok(Value::Null)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<Value, Error> {
        Ok(Value::Null)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<Value, Error> {
        Ok(Value::String(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Value, Error> {
        value.serialize(Canon)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Value, Error> {
        Ok(tagged(variant, value.serialize(Canon)?))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Compound, Error> {
        Ok(Compound::new(Shape::Array(None), len.unwrap_or(0)))
    }
    fn serialize_tuple(self, len: usize) -> Result<Compound, Error> {
        Ok(Compound::new(Shape::Array(None), len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Compound, Error> {
        Ok(Compound::new(Shape::Array(None), len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound, Error> {
        Ok(Compound::new(Shape::Array(Some(variant)), len))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Compound, Error> {
        Ok(Compound::new(Shape::Object(None), 0))
    }
    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Compound, Error> {
        let shape = if name == DURATION { Shape::Duration } else { Shape::Object(None) };
        Ok(Compound::new(shape, 0))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound, Error> {
        Ok(Compound::new(Shape::Object(Some(variant)), 0))
    }
}

/// `{variant: value}`, an externally tagged enum.
fn tagged(variant: &str, value: Value) -> Value {
    Value::Object(Map::from_iter([(variant.to_owned(), value)]))
}

/// What a [`Compound`] becomes: an array or object (wrapped in its variant's tag, if any), or
/// a duration's microseconds.
enum Shape {
    Array(Option<&'static str>),
    Object(Option<&'static str>),
    Duration,
}

/// A sequence, tuple, map or struct being serialized.
struct Compound {
    shape: Shape,
    items: Vec<Value>,
    fields: Map<String, Value>,
    key: Option<String>,
}

impl Compound {
    fn new(shape: Shape, len: usize) -> Self {
        Self { shape, items: Vec::with_capacity(len), fields: Map::new(), key: None }
    }

    fn item<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.items.push(value.serialize(Canon)?);
        Ok(())
    }

    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), Error> {
        self.fields.insert(key.to_owned(), value.serialize(Canon)?);
        Ok(())
    }

    fn end(self) -> Result<Value, Error> {
        match self.shape {
            Shape::Array(None) => Ok(Value::Array(self.items)),
            Shape::Array(Some(variant)) => Ok(tagged(variant, Value::Array(self.items))),
            Shape::Object(None) => Ok(Value::Object(self.fields)),
            Shape::Object(Some(variant)) => Ok(tagged(variant, Value::Object(self.fields))),
            Shape::Duration => {
                let part = |name| self.fields.get(name).and_then(Value::as_u64);
                let (Some(secs), Some(nanos)) = (part("secs"), part("nanos")) else {
                    return Err(error("a Duration without secs and nanos"));
                };
                if nanos % 1_000 != 0 {
                    return Err(error(format!(
                        "{secs} s {nanos} ns is not a whole number of microseconds"
                    )));
                }
                secs.checked_mul(MICROS_PER_SEC)
                    .and_then(|us| us.checked_add(nanos / 1_000))
                    .map(Value::from)
                    .ok_or_else(|| error(format!("{secs} s does not fit in u64 microseconds")))
            }
        }
    }
}

/// A map key as JSON writes it: strings as themselves, integers in decimal.
fn key_string(key: Value) -> Result<String, Error> {
    match key {
        Value::String(s) => Ok(s),
        Value::Number(n) if !n.is_f64() => Ok(n.to_string()),
        other => Err(error(format!("a map key must be a string or an integer, not {other}"))),
    }
}

impl ser::SerializeSeq for Compound {
    type Ok = Value;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.item(value)
    }
    fn end(self) -> Result<Value, Error> {
        Compound::end(self)
    }
}

impl ser::SerializeTuple for Compound {
    type Ok = Value;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.item(value)
    }
    fn end(self) -> Result<Value, Error> {
        Compound::end(self)
    }
}

impl ser::SerializeTupleStruct for Compound {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.item(value)
    }
    fn end(self) -> Result<Value, Error> {
        Compound::end(self)
    }
}

impl ser::SerializeTupleVariant for Compound {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.item(value)
    }
    fn end(self) -> Result<Value, Error> {
        Compound::end(self)
    }
}

impl ser::SerializeMap for Compound {
    type Ok = Value;
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.key = Some(key_string(key.serialize(Canon)?)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let key = self.key.take().ok_or_else(|| error("a map value without its key"))?;
        self.field(&key, value)
    }
    fn end(self) -> Result<Value, Error> {
        Compound::end(self)
    }
}

impl ser::SerializeStruct for Compound {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.field(key, value)
    }
    fn end(self) -> Result<Value, Error> {
        Compound::end(self)
    }
}

impl ser::SerializeStructVariant for Compound {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.field(key, value)
    }
    fn end(self) -> Result<Value, Error> {
        Compound::end(self)
    }
}

/// The deserializer: a [`Value`] read as canonical JSON.
struct CanonDe(Value);

impl<'de> IntoDeserializer<'de, Error> for CanonDe {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

/// The elements of an array, each read as canonical JSON.
type Elements =
    SeqDeserializer<std::iter::Map<std::vec::IntoIter<Value>, fn(Value) -> CanonDe>, Error>;

fn elements(items: Vec<Value>) -> Elements {
    SeqDeserializer::new(items.into_iter().map(CanonDe as fn(Value) -> CanonDe))
}

impl<'de> de::Deserializer<'de> for CanonDe {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_string(s),
            Value::Array(items) => {
                let mut access = elements(items);
                let value = visitor.visit_seq(&mut access)?;
                access.end()?;
                Ok(value)
            }
            Value::Object(fields) => {
                let mut access =
                    MapDeserializer::new(fields.into_iter().map(|(k, v)| (Key(k), CanonDe(v))));
                let value = visitor.visit_map(&mut access)?;
                access.end()?;
                Ok(value)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => match hex::decode(&s) {
                Ok(bytes) => visitor.visit_byte_buf(bytes),
                Err(e) => Err(de::Error::custom(format!("bytes {s:?} are not hex: {e}"))),
            },
            other => Err(de::Error::custom(format!("bytes must be a hex string, not {other}"))),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        if name != DURATION {
            return self.deserialize_any(visitor);
        }
        let Some(us) = self.0.as_u64() else {
            let what = format!("a duration must be integer microseconds, not {}", self.0);
            return Err(de::Error::custom(what));
        };
        let parts =
            vec![Value::from(us / MICROS_PER_SEC), Value::from(us % MICROS_PER_SEC * 1_000)];
        let mut access = elements(parts);
        let value = visitor.visit_seq(&mut access)?;
        access.end()?;
        Ok(value)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(variant) => visitor.visit_enum(variant.into_deserializer()),
            Value::Object(fields) if fields.len() == 1 => {
                let (variant, value) = fields.into_iter().next().expect("one field");
                visitor.visit_enum(Variant { variant, value })
            }
            other => Err(de::Error::custom(format!(
                "an enum is a variant's name or an object with one key, not {other}"
            ))),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

/// An externally tagged variant being read.
struct Variant {
    variant: String,
    value: Value,
}

impl<'de> de::EnumAccess<'de> for Variant {
    type Error = Error;
    type Variant = CanonDe;

    fn variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, CanonDe), Error> {
        let variant = seed.deserialize(self.variant.into_deserializer())?;
        Ok((variant, CanonDe(self.value)))
    }
}

impl<'de> de::VariantAccess<'de> for CanonDe {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.0 {
            Value::Null => Ok(()),
            other => Err(de::Error::custom(format!("a unit variant carries nothing, not {other}"))),
        }
    }

    fn newtype_variant_seed<S: de::DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, Error> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_map(self, visitor)
    }
}

/// A map key: a string, read as an integer where the type asks for one.
struct Key(String);

impl<'de> IntoDeserializer<'de, Error> for Key {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

macro_rules! parse_key {
    ($($method:ident => $visit:ident: $ty:ty),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.0.parse::<$ty>() {
                Ok(n) => visitor.$visit(n),
                Err(e) => Err(de::Error::custom(format!("map key {:?}: {e}", self.0))),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Key {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_string(self.0)
    }

    parse_key! {
        deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64,
        deserialize_i8 => visit_i8: i8,
        deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32,
        deserialize_i64 => visit_i64: i64,
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_enum(self.0.into_deserializer())
    }

    serde::forward_to_deserialize_any! {
        bool i128 u128 f32 f64 char str string bytes byte_buf option unit unit_struct seq
        tuple tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use bytes::Bytes;
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    use super::*;

    #[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
    struct Id(u64);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Ping,
        Put { key: String, value: Bytes, after: Duration },
        Pair(Id, Option<u8>),
        Wrap(Vec<u8>),
    }

    fn round_trip<T>(value: T, expected: Value)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let written = to_value(&value).expect("serializes");
        assert_eq!(written, expected);
        assert_eq!(from_value::<T>(&written).expect("deserializes"), value);
    }

    #[test]
    fn bytes_are_hex_and_durations_microseconds() {
        let put = Msg::Put {
            key: "k".into(),
            value: Bytes::from_static(b"hi\x00"),
            after: Duration::from_millis(1500),
        };
        round_trip(put, json!({"Put": {"key": "k", "value": "686900", "after": 1_500_000}}));
        round_trip(Msg::Ping, json!("Ping"));
        round_trip(Msg::Pair(Id(3), None), json!({"Pair": [3, null]}));
        round_trip(Msg::Pair(Id(3), Some(0)), json!({"Pair": [3, 0]}));
        // A Vec<u8> is a sequence, not bytes: serde writes it element by element.
        round_trip(Msg::Wrap(vec![1, 2]), json!({"Wrap": [1, 2]}));
    }

    #[test]
    fn integer_map_keys_are_decimal_strings() {
        let map = BTreeMap::from([(Id(2), "two".to_owned()), (Id(10), "ten".to_owned())]);
        round_trip(map, json!({"2": "two", "10": "ten"}));
    }

    #[test]
    fn ambiguous_and_inexact_values_are_refused() {
        let nested: Option<Option<u8>> = Some(None);
        let err = to_value(&nested).expect_err("Some(None) would read back as None");
        assert!(err.to_string().contains("ambiguous null"), "{err}");
        let err = to_value(&Duration::from_nanos(1_500)).expect_err("not whole microseconds");
        assert!(err.to_string().contains("microseconds"), "{err}");
        let err = from_value::<Bytes>(&json!("6g")).expect_err("not hex");
        assert!(err.to_string().contains("not hex"), "{err}");
        let err =
            from_value::<Duration>(&json!({"secs": 1, "nanos": 0})).expect_err("serde's form");
        assert!(err.to_string().contains("integer microseconds"), "{err}");
        assert!(from_value::<Msg>(&json!({"Ping": 1})).is_err(), "a unit variant carries nothing");
    }
}
