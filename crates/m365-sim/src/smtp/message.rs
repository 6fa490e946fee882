//! What the SMTP side needs from a submitted message's header: the From addresses (for the
//! Send As check) and the Message-ID (Exchange echoes it in the final 250).

use mail_parser::MessageParser;

/// The header fields the submission checks look at.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct HeaderFacts {
    /// Every address in `From:` (usually one).
    pub from: Vec<String>,
    /// `Message-ID:` without the angle brackets.
    pub message_id: Option<String>,
}

/// Reads the header of `data` (a message as submitted, dot-stuffing already removed).
pub(super) fn header_facts(data: &[u8]) -> HeaderFacts {
    let Some(msg) = MessageParser::new().parse_headers(data) else {
        return HeaderFacts::default();
    };
    let from = msg
        .from()
        .map(|a| {
            a.iter()
                .filter_map(|a| a.address())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let message_id = msg
        .message_id()
        .map(|id| {
            id.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
        .filter(|id| !id.is_empty());
    HeaderFacts { from, message_id }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_and_message_id() {
        let f = header_facts(
            b"From: \"Sales, Contoso\" <sales@contoso.com>\r\nTo: x@y.z\r\n\
              Message-ID: <abc.123@contoso.com>\r\nSubject: hi\r\n\r\nFrom: body@x.y\r\n",
        );
        assert_eq!(f.from, vec!["sales@contoso.com"]);
        assert_eq!(f.message_id.as_deref(), Some("abc.123@contoso.com"));
    }

    #[test]
    fn folded_bare_and_missing() {
        let f = header_facts(b"Subject: x\r\nFrom:\r\n alice@contoso.com\r\n\r\nbody\r\n");
        assert_eq!(f.from, vec!["alice@contoso.com"]);
        assert_eq!(f.message_id, None);
        assert_eq!(
            header_facts(b"Subject: none\r\n\r\nhi\r\n").from,
            Vec::<String>::new()
        );
    }
}
