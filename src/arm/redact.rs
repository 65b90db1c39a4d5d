//! Keeping secrets out of the text of ARM errors.
//!
//! Azure sometimes quotes a request back in a validation message ("Could not validate the
//! credentials '...'"), in whatever encoding the service at hand uses: as sent, percent-decoded
//! or encoded again, JSON-escaped. So the code and message of an error answer are read through
//! those encodings, and three rules replace what they find with `[redacted]` before the text
//! becomes part of an [`ArmError`](super::ArmError):
//!
//! - every piece of a secret the request sent (its body's credentials, its bearer token);
//! - anything shaped like a SAS token: a query string with an `sv=` or `sig=` parameter;
//! - for the operations that carry keys, every long run of base64, such as an account key.

use std::ops::Range;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use zeroize::Zeroizing;

/// What a secret is replaced with.
pub(super) const REDACTED: &str = "[redacted]";

/// The longest text searched; an error keeps far less (see `shorten`), so a longer text is cut
/// here first rather than searched in full.
const MAX_SEARCHED: usize = 16 * 1024;

/// The shortest piece of a sent secret that is redacted wherever it appears. A secret shorter
/// than this (none that Azure issues is) is redacted only whole.
const PIECE: usize = 8;

/// Rounds of decoding: a value percent-encoded twice, then JSON-escaped, is read back.
const DECODE_ROUNDS: usize = 3;

/// The shortest run of base64 taken for a key or a signature.
const MIN_KEY_LIKE: usize = 40;

/// The secret values a request body carries: those of `properties.credentials.secrets`, as in
/// a datastore `PUT`. A body of any other shape carries none.
#[derive(Default)]
pub(super) struct SentSecrets(Vec<SecretString>);

impl SentSecrets {
    pub fn in_body(body: &[u8]) -> Self {
        let Ok(body) = serde_json::from_slice::<Body>(body) else {
            return SentSecrets::default();
        };
        let secrets = body.properties.credentials.secrets;
        let values = [
            secrets.key,
            secrets.sas_token,
            secrets.client_secret,
            secrets.certificate,
        ];
        SentSecrets(values.into_iter().flatten().collect())
    }

    /// The values as sent; keep them out of logs.
    pub fn expose(&self) -> impl Iterator<Item = &[u8]> {
        self.0.iter().map(|s| s.expose_secret().as_bytes())
    }
}

impl std::fmt::Debug for SentSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SentSecrets({} values)", self.0.len())
    }
}

#[derive(Deserialize)]
struct Body {
    properties: Properties,
}

#[derive(Deserialize)]
struct Properties {
    credentials: Credentials,
}

#[derive(Deserialize)]
struct Credentials {
    secrets: Secrets,
}

/// The secret fields of every kind of datastore secrets Azure ML defines.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Secrets {
    key: Option<SecretString>,
    sas_token: Option<SecretString>,
    client_secret: Option<SecretString>,
    certificate: Option<SecretString>,
}

/// `text` (an error code or message from an ARM answer) with every piece of `sent`, every
/// SAS-shaped query string and, if `key_like`, every long base64 run replaced.
pub(super) fn redact<'a>(
    text: &str,
    sent: impl IntoIterator<Item = &'a [u8]>,
    key_like: bool,
) -> String {
    let text = &text[..floor_char_boundary(text, MAX_SEARCHED)];
    let view = Decoded::of_text(text);
    let mut marks = sent_pieces(&view.bytes, sent);
    marks.extend(sas_queries(&view.bytes));
    if key_like {
        marks.extend(base64_runs(&view.bytes));
    }
    let marks = marks.into_iter().map(|mark| view.origin(mark)).collect();
    replace(text, marks)
}

/// Text with its percent-escapes and JSON escapes undone. Each byte remembers the span of the
/// original text it came from, which always starts and ends on a character boundary.
struct Decoded {
    bytes: Zeroizing<Vec<u8>>,
    spans: Vec<Range<usize>>,
}

impl Decoded {
    fn of_text(text: &str) -> Self {
        let mut spans = Vec::with_capacity(text.len());
        for (start, c) in text.char_indices() {
            let span = start..start + c.len_utf8();
            spans.extend(std::iter::repeat_n(span, c.len_utf8()));
        }
        let bytes = Zeroizing::new(text.as_bytes().to_vec());
        Decoded { bytes, spans }.fully_decoded()
    }

    fn of_bytes(bytes: &[u8]) -> Zeroizing<Vec<u8>> {
        let spans = (0..bytes.len()).map(|i| i..i + 1).collect();
        let bytes = Zeroizing::new(bytes.to_vec());
        Decoded { bytes, spans }.fully_decoded().bytes
    }

    fn fully_decoded(mut self) -> Self {
        for _ in 0..DECODE_ROUNDS {
            let next = self.decoded_once();
            // Every escape undone shortens the text: the same length means there was none.
            if next.bytes.len() == self.bytes.len() {
                break;
            }
            self = next;
        }
        self
    }

    fn decoded_once(&self) -> Self {
        // Decoding only shrinks, so the buffer never moves (leaving a copy behind).
        let mut bytes = Zeroizing::new(Vec::with_capacity(self.bytes.len()));
        let mut spans = Vec::with_capacity(self.bytes.len());
        let mut at = 0;
        while at < self.bytes.len() {
            let (decoded, used) = unescape(&self.bytes[at..]);
            let span = self.spans[at].start..self.spans[at + used - 1].end;
            for byte in decoded.as_slice() {
                bytes.push(*byte);
                spans.push(span.clone());
            }
            at += used;
        }
        Decoded { bytes, spans }
    }

    /// The span of the original text that the decoded bytes `range` came from.
    fn origin(&self, range: Range<usize>) -> Range<usize> {
        self.spans[range.start].start..self.spans[range.end - 1].end
    }
}

/// Up to four bytes (one UTF-8 character) that an escape decodes to.
struct Unescaped {
    buffer: [u8; 4],
    len: usize,
}

impl Unescaped {
    fn byte(byte: u8) -> Self {
        Unescaped {
            buffer: [byte, 0, 0, 0],
            len: 1,
        }
    }

    fn char(c: char) -> Self {
        let mut buffer = [0; 4];
        let len = c.encode_utf8(&mut buffer).len();
        Unescaped { buffer, len }
    }

    fn as_slice(&self) -> &[u8] {
        &self.buffer[..self.len]
    }
}

/// What the escape at the start of `rest` (`%2B`, `\u002B`, `\/`, ...) stands for, and how many
/// bytes it takes; a byte that starts no escape stands for itself.
fn unescape(rest: &[u8]) -> (Unescaped, usize) {
    let hex = |range: Range<usize>| {
        let digits = rest.get(range)?;
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    match rest {
        [b'%', ..] => match hex(1..3) {
            Some(value) => (Unescaped::byte(value as u8), 3),
            None => (Unescaped::byte(b'%'), 1),
        },
        [b'\\', b'u', ..] => match hex(2..6).and_then(char::from_u32) {
            Some(c) => (Unescaped::char(c), 6),
            None => (Unescaped::byte(b'\\'), 1),
        },
        [b'\\', escaped @ (b'/' | b'\\' | b'"'), ..] => (Unescaped::byte(*escaped), 2),
        [byte, ..] => (Unescaped::byte(*byte), 1),
        [] => (Unescaped::byte(0), 1),
    }
}

/// Every stretch of `text` that repeats a piece of a sent secret: any [`PIECE`] bytes of it in a
/// row, or the whole of a shorter one. A space matches a `+`, which form-decoding turns into one.
fn sent_pieces<'a>(text: &[u8], sent: impl IntoIterator<Item = &'a [u8]>) -> Vec<Range<usize>> {
    let secrets: Vec<_> = sent
        .into_iter()
        .map(Decoded::of_bytes)
        .filter(|s| !s.is_empty())
        .collect();
    let mut marks = Vec::new();
    let mut pieces = Zeroizing::new(Vec::with_capacity(
        secrets
            .iter()
            .map(|s| s.len().saturating_sub(PIECE - 1))
            .sum(),
    ));
    for secret in &secrets {
        if secret.len() < PIECE {
            marks.extend(find_all(text, secret));
        } else {
            pieces.extend(secret.windows(PIECE).map(folded));
        }
    }
    pieces.sort_unstable();
    for (at, window) in text.windows(PIECE).enumerate() {
        if pieces.binary_search(&folded(window)).is_ok() {
            marks.push(at..at + PIECE);
        }
    }
    marks
}

fn folded(window: &[u8]) -> [u8; PIECE] {
    let mut piece = [0; PIECE];
    for (to, from) in piece.iter_mut().zip(window) {
        *to = if *from == b' ' { b'+' } else { *from };
    }
    piece
}

fn find_all(text: &[u8], needle: &[u8]) -> Vec<Range<usize>> {
    text.windows(needle.len())
        .enumerate()
        .filter(|(_, window)| *window == needle)
        .map(|(at, _)| at..at + needle.len())
        .collect()
}

/// The query strings in `text` that carry `sv=` or `sig=`, the parameters of every SAS token:
/// from the first of them (or the `?` before it) to the end of the word.
fn sas_queries(text: &[u8]) -> Vec<Range<usize>> {
    let mut marks = Vec::new();
    let mut start = 0;
    for word in text.split(|b| is_word_break(*b)) {
        if let Some(first) = first_sas_parameter(word) {
            let query = match word[..first].iter().rposition(|b| *b == b'?') {
                Some(question_mark) => question_mark + 1,
                None => first,
            };
            marks.push(start + query..start + word.len());
        }
        start += word.len() + 1;
    }
    marks
}

/// Where a decoded SAS token, or the query of a URL, ends in a message.
fn is_word_break(byte: u8) -> bool {
    byte.is_ascii_whitespace() || b"'\"`<>()[]{}".contains(&byte)
}

fn first_sas_parameter(word: &[u8]) -> Option<usize> {
    (0..word.len()).find(|&at| {
        let starts_a_name = at == 0 || !word[at - 1].is_ascii_alphanumeric();
        let rest = &word[at..];
        let named =
            |name: &[u8]| rest.len() >= name.len() && rest[..name.len()].eq_ignore_ascii_case(name);
        starts_a_name && (named(b"sv=") || named(b"sig="))
    })
}

/// Every run of base64 long enough to be an account key or a signature.
fn base64_runs(text: &[u8]) -> Vec<Range<usize>> {
    let is_base64 = |b: &u8| b.is_ascii_alphanumeric() || b"+/=".contains(b);
    let mut marks = Vec::new();
    let mut at = 0;
    while at < text.len() {
        let run = text[at..].iter().take_while(|b| is_base64(b)).count();
        if run >= MIN_KEY_LIKE {
            marks.push(at..at + run);
        }
        at += run.max(1);
    }
    marks
}

/// `text` with each of `marks` (overlapping or touching ones as one) replaced by [`REDACTED`].
fn replace(text: &str, mut marks: Vec<Range<usize>>) -> String {
    marks.sort_by_key(|mark| mark.start);
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(marks.len());
    for mark in marks {
        match merged.last_mut() {
            Some(last) if mark.start <= last.end => last.end = last.end.max(mark.end),
            _ => merged.push(mark),
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut shown = 0;
    for mark in merged {
        out.push_str(&text[shown..mark.start]);
        out.push_str(REDACTED);
        shown = mark.end;
    }
    out.push_str(&text[shown..]);
    out
}

/// The largest char boundary of `text` at or below `at`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG: &str = "g3gB/ZX+9kq1Lm3Pq8Rt7Uv0Wx2Yz4Ab6Cd8Ef0Gh1I=";
    const TOKEN: &str = "sv=2024-11-04&ss=b&srt=co&sp=rl&se=2026-01-01T00%3A00%3A00Z&spr=https%2Chttp&sig=g3gB%2FZX%2B9kq1Lm3Pq8Rt7Uv0Wx2Yz4Ab6Cd8Ef0Gh1I%3D";

    fn pieces(secret: &str) -> impl Iterator<Item = &str> {
        (0..=secret.len() - PIECE).map(move |at| &secret[at..at + PIECE])
    }

    fn assert_no_piece(shown: &str, secret: &str) {
        for piece in pieces(secret) {
            assert!(
                !shown.contains(piece),
                "{piece:?} of the secret in {shown:?}"
            );
        }
    }

    fn percent_encoded(text: &str) -> String {
        percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    fn json_escaped(text: &str) -> String {
        text.chars()
            .map(|c| match c {
                '&' | '+' | '=' => format!("\\u{:04X}", c as u32),
                '/' => "\\/".to_string(),
                c => c.to_string(),
            })
            .collect()
    }

    #[test]
    fn a_sent_token_is_redacted_in_every_form_azure_may_quote_it() {
        let decoded = percent_encoding::percent_decode_str(TOKEN)
            .decode_utf8()
            .unwrap()
            .into_owned();
        for echoed in [
            TOKEN.to_string(),
            decoded.clone(),
            percent_encoded(TOKEN),
            percent_encoded(&percent_encoded(TOKEN)),
            json_escaped(&decoded),
            decoded.replace('+', " "),
            SIG.to_string(),
        ] {
            let message =
                format!("Could not validate the credentials '{echoed}' for the datastore.");
            let shown = redact(&message, [TOKEN.as_bytes()], false);
            assert!(
                shown.starts_with("Could not validate the credentials '"),
                "{shown}"
            );
            assert!(shown.ends_with("' for the datastore."), "{shown}");
            assert!(shown.contains(REDACTED), "{shown}");
            assert_no_piece(&shown, SIG);
            assert_no_piece(&shown, &percent_encoded(SIG));
        }
    }

    #[test]
    fn a_piece_of_a_sent_key_is_redacted_and_the_rest_of_the_text_kept() {
        let key = "c2VjcmV0LWtleS1zZWNyZXQta2V5LXNlY3JldC1rZXktc2VjcmV0LWtleQ==";
        let message = format!("Key starting '{}' is invalid.", &key[..20]);
        assert_eq!(
            redact(&message, [key.as_bytes()], false),
            "Key starting '[redacted]' is invalid."
        );
        // Form-decoding turns a `+` into a space, which splits no piece off.
        let key =
            "Kx9/2bQ+7hZ3mN0pLw4RtY8uVi1oE6sAa5dFg2HjKl3ZxCv7Bn9Mq0Wp4Er8Ty+Ui/Op1As5Df2Gh6Q==";
        let message = format!("Key '{}' is invalid.", key.replace('+', " "));
        assert_eq!(
            redact(&message, [key.as_bytes()], false),
            "Key '[redacted]' is invalid."
        );
    }

    #[test]
    fn sas_shaped_text_is_redacted_even_when_not_sent() {
        let url = format!("https://acct.blob.core.windows.net/data?{TOKEN}");
        let cases = [
            (
                format!("Cannot reach {url}."),
                "Cannot reach https://acct.blob.core.windows.net/data?[redacted]".to_string(),
            ),
            (
                format!("token \"{}\" expired", percent_encoded(TOKEN)),
                "token \"[redacted]\" expired".to_string(),
            ),
            (
                "signature sig=abc%2Bdef%3D is wrong".to_string(),
                "signature [redacted] is wrong".to_string(),
            ),
            (
                "sasToken:SIG\\u003dabc+def= rejected".to_string(),
                "sasToken:[redacted] rejected".to_string(),
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(redact(&message, [], false), expected);
        }
        for kept in ["csv=1 rows", "the sv field", "sig is missing"] {
            assert_eq!(redact(kept, [], false), kept);
        }
    }

    #[test]
    fn key_like_runs_are_redacted_through_percent_encoding_and_ids_kept() {
        let key = "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFy+/ab==";
        let id = "/subscriptions/0000-1111/resourceGroups/rg-a/providers/Microsoft.Storage/storageAccounts/sto1";
        for echoed in [key.to_string(), percent_encoded(key)] {
            let message = format!("key '{echoed}' is invalid for {id}");
            assert_eq!(
                redact(&message, [], true),
                format!("key '[redacted]' is invalid for {id}")
            );
            assert!(redact(&message, [], false).contains("Zm9vYmFy"));
        }
    }

    #[test]
    fn text_around_a_redaction_keeps_its_characters() {
        let message = "clé « sig=abc%2Bdef » refusée — réessayez";
        assert_eq!(
            redact(message, [], false),
            "clé « [redacted] » refusée — réessayez"
        );
        assert_eq!(redact("", [b"secret-value".as_slice()], true), "");
    }

    #[test]
    fn only_datastore_credentials_count_as_sent_secrets() {
        let body =
            br#"{"properties": {"description": "d", "credentials": {"credentialsType": "Sas",
            "secrets": {"secretsType": "Sas", "sasToken": "sv=1&sig=x"}}}}"#;
        let sent = SentSecrets::in_body(body);
        assert_eq!(
            sent.expose().collect::<Vec<_>>(),
            [b"sv=1&sig=x".as_slice()]
        );
        assert_eq!(format!("{sent:?}"), "SentSecrets(1 values)");
        assert_eq!(
            SentSecrets::in_body(br#"{"keyName": "key1"}"#)
                .expose()
                .count(),
            0
        );
    }
}
