//! Access log formats: Envoy's command operators (`%START_TIME%`,
//! `%REQ(USER-AGENT)%`, ...) in a line of text. Parsed once, where a format
//! enters (the resource model refuses an operator it does not know, the
//! data path renders the parsed form), so that no request interprets a
//! string.

use std::fmt;

/// One piece of a format: text as it is, or an operator's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Op(Operator),
}

/// The operators Koguma renders (Envoy's names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    StartTime,
    /// Milliseconds from the first byte in to the last byte out.
    Duration,
    /// Milliseconds until the request was read whole.
    RequestDuration,
    /// Milliseconds until the first byte of the response.
    ResponseDuration,
    ResponseCode,
    ResponseCodeDetails,
    ResponseFlags,
    BytesReceived,
    BytesSent,
    Protocol,
    /// A request header (or pseudo-header `:path`, `:method`,
    /// `:authority`, `:scheme`), lowercase; the second is tried when the
    /// first is absent; at most `max` characters.
    Req(Header),
    /// A response header.
    Resp(Header),
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress,
    UpstreamTransportFailureReason,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    DownstreamLocalAddress,
    DownstreamLocalAddressWithoutPort,
    /// The caller's URI SANs (its SPIFFE ID under mesh mTLS).
    DownstreamPeerUriSan,
    /// The TLS server name the caller sent.
    RequestedServerName,
    ConnectionId,
    Hostname,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub alternative: Option<String>,
    pub max: Option<usize>,
}

impl Operator {
    /// Whether its value is a number (a JSON format writes it as one).
    pub fn is_number(&self) -> bool {
        matches!(
            self,
            Operator::Duration
                | Operator::RequestDuration
                | Operator::ResponseDuration
                | Operator::ResponseCode
                | Operator::BytesReceived
                | Operator::BytesSent
                | Operator::ConnectionId
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError(String);

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FormatError {}

/// Parses `format`. A `%` that opens no operator is text, as Envoy keeps
/// it; an operator Koguma does not render is an error naming it.
pub fn parse(format: &str) -> Result<Vec<Piece>, FormatError> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = format;
    while let Some(start) = rest.find('%') {
        let after = &rest[start + 1..];
        let Some(len) = operator_len(after) else {
            text.push_str(&rest[..=start]);
            rest = after;
            continue;
        };
        text.push_str(&rest[..start]);
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(Piece::Op(operator(&after[..len])?));
        rest = &after[len + 1..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// The length of the operator at the start of `s` (up to its closing
/// `%`), when `s` starts with one: upper-case letters and `_`, then
/// optional `(...)` and `:N`.
fn operator_len(s: &str) -> Option<usize> {
    let name = s
        .bytes()
        .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
        .count();
    if name == 0 {
        return None;
    }
    let mut i = name;
    let bytes = s.as_bytes();
    if bytes.get(i) == Some(&b'(') {
        i += s[i..].find(')')? + 1;
    }
    if bytes.get(i) == Some(&b':') {
        i += 1 + s[i + 1..].bytes().take_while(u8::is_ascii_digit).count();
    }
    (bytes.get(i) == Some(&b'%')).then_some(i)
}

fn operator(text: &str) -> Result<Operator, FormatError> {
    let (name, args) = match text.find('(') {
        Some(open) => (&text[..open], Some(&text[open..])),
        None => (text, None),
    };
    let header = |kind: &str| -> Result<Header, FormatError> {
        let args = args.ok_or_else(|| {
            FormatError(format!(
                "%{kind}%: needs a header name, as %{kind}(USER-AGENT)%"
            ))
        })?;
        let close = args.find(')').unwrap_or(args.len());
        let inner = &args[1..close];
        let max = match args[close..].strip_prefix("):") {
            Some(n) => Some(n.parse().map_err(|_| {
                FormatError(format!("%{text}%: the length after ':' must be a number"))
            })?),
            None => None,
        };
        let (name, alternative) = match inner.split_once('?') {
            Some((a, b)) => (a, Some(b.to_ascii_lowercase())),
            None => (inner, None),
        };
        if name.is_empty() {
            return Err(FormatError(format!("%{text}%: the header name is empty")));
        }
        Ok(Header {
            name: name.to_ascii_lowercase(),
            alternative,
            max,
        })
    };
    let op = match name {
        "REQ" => Operator::Req(header("REQ")?),
        "RESP" => Operator::Resp(header("RESP")?),
        _ if args.is_some() => {
            return Err(FormatError(format!(
                "%{text}%: koguma renders %{name}% without arguments only"
            )));
        }
        "START_TIME" => Operator::StartTime,
        "DURATION" => Operator::Duration,
        "REQUEST_DURATION" => Operator::RequestDuration,
        "RESPONSE_DURATION" => Operator::ResponseDuration,
        "RESPONSE_CODE" => Operator::ResponseCode,
        "RESPONSE_CODE_DETAILS" => Operator::ResponseCodeDetails,
        "RESPONSE_FLAGS" => Operator::ResponseFlags,
        "BYTES_RECEIVED" => Operator::BytesReceived,
        "BYTES_SENT" => Operator::BytesSent,
        "PROTOCOL" => Operator::Protocol,
        "UPSTREAM_HOST" => Operator::UpstreamHost,
        "UPSTREAM_CLUSTER" => Operator::UpstreamCluster,
        "UPSTREAM_LOCAL_ADDRESS" => Operator::UpstreamLocalAddress,
        "UPSTREAM_TRANSPORT_FAILURE_REASON" => Operator::UpstreamTransportFailureReason,
        "DOWNSTREAM_REMOTE_ADDRESS" | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS" => {
            Operator::DownstreamRemoteAddress
        }
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT"
        | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT" => {
            Operator::DownstreamRemoteAddressWithoutPort
        }
        "DOWNSTREAM_LOCAL_ADDRESS" => Operator::DownstreamLocalAddress,
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => Operator::DownstreamLocalAddressWithoutPort,
        "DOWNSTREAM_PEER_URI_SAN" => Operator::DownstreamPeerUriSan,
        "REQUESTED_SERVER_NAME" => Operator::RequestedServerName,
        "CONNECTION_ID" => Operator::ConnectionId,
        "HOSTNAME" => Operator::Hostname,
        other => {
            return Err(FormatError(format!(
                "%{other}% is not a command operator koguma renders"
            )));
        }
    };
    Ok(op)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_and_text_alternate() {
        let pieces =
            parse("[%START_TIME%] \"%REQ(X-ENVOY-ORIGINAL-PATH?:PATH):20%\" 100% %BYTES_SENT%\n")
                .unwrap();
        assert_eq!(
            pieces,
            vec![
                Piece::Text("[".into()),
                Piece::Op(Operator::StartTime),
                Piece::Text("] \"".into()),
                Piece::Op(Operator::Req(Header {
                    name: "x-envoy-original-path".into(),
                    alternative: Some(":path".into()),
                    max: Some(20),
                })),
                Piece::Text("\" 100% ".into()),
                Piece::Op(Operator::BytesSent),
                Piece::Text("\n".into()),
            ]
        );
    }

    #[test]
    fn unknown_operators_are_named() {
        let e = parse("%NOPE% x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "%NOPE% is not a command operator koguma renders"
        );
        assert!(parse("%REQ%").is_err());
        assert!(parse("%START_TIME(%s)%").is_err());
        // A lone percent, or one before lower-case text, is text.
        assert_eq!(
            parse("50% off").unwrap(),
            vec![Piece::Text("50% off".into())]
        );
    }
}
