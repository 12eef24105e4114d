//! postcard as a `tokio-serde` format, for tarpc's serde transport.
//!
//! tokio-serde 0.9 ships no postcard format (and `tokio-serde-postcard` targets 0.8), so this is
//! the small adapter the design brief describes: `postcard::to_allocvec` out, `from_bytes` in.
//! Frames are length-delimited below it, with the configured maximum frame size.

use std::io;
use std::marker::PhantomData;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// Encodes `SinkItem`s and decodes `Item`s with postcard.
#[derive(Debug)]
pub struct Postcard<Item, SinkItem>(PhantomData<fn(SinkItem) -> Item>);

impl<Item, SinkItem> Default for Postcard<Item, SinkItem> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<Item, SinkItem: Serialize> tokio_serde::Serializer<SinkItem> for Postcard<Item, SinkItem> {
    type Error = io::Error;

    fn serialize(self: Pin<&mut Self>, item: &SinkItem) -> Result<Bytes, io::Error> {
        postcard::to_allocvec(item).map(Bytes::from).map_err(io::Error::other)
    }
}

impl<Item: for<'de> Deserialize<'de>, SinkItem> tokio_serde::Deserializer<Item>
    for Postcard<Item, SinkItem>
{
    type Error = io::Error;

    fn deserialize(self: Pin<&mut Self>, src: &BytesMut) -> Result<Item, io::Error> {
        postcard::from_bytes(src).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// A tarpc transport over `io`: length-delimited frames of at most `max_frame` bytes, each one
/// postcard value. A larger frame, or one that does not decode, is an error that closes the
/// connection.
pub fn transport<S, Item, SinkItem>(
    io: S,
    max_frame: usize,
) -> tarpc::serde_transport::Transport<S, Item, SinkItem, Postcard<Item, SinkItem>>
where
    S: AsyncRead + AsyncWrite,
    Item: for<'de> Deserialize<'de>,
    SinkItem: Serialize,
{
    let framing = LengthDelimitedCodec::builder().max_frame_length(max_frame).new_codec();
    tarpc::serde_transport::new(Framed::new(io, framing), Postcard::default())
}
