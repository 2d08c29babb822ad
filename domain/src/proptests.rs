//! Property tests of the parsers: any input is answered (never a panic),
//! and what a value prints parses back to it.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use crate::{ByteSize, CopyTarget, Destination, ObjectKey, S3Url, SourceUrl};

proptest! {
    #[test]
    fn byte_sizes_parse_any_text_and_round_trip(text in "\\PC{0,24}", n in any::<u64>(), k in 0u64..1024, unit in 0usize..5) {
        let _ = ByteSize::parse(&text);
        prop_assert_eq!(ByteSize::parse(&n.to_string()).unwrap(), ByteSize::new(n));
        // Whole multiples print exactly (`5 GiB`) and parse back.
        let exact = ByteSize::new(k << (10 * unit));
        prop_assert_eq!(ByteSize::parse(&exact.to_string()).unwrap(), exact);
    }

    #[test]
    fn object_keys_parse_any_text_and_keep_it(text in "\\PC{0,64}", segments in proptest::collection::vec("[A-Za-z0-9_-][A-Za-z0-9._-]{0,12}", 1..5)) {
        if let Ok(key) = ObjectKey::parse(&text) {
            prop_assert_eq!(key.as_str(), text.as_str());
            prop_assert!(!key.as_str().split('/').any(|s| s.is_empty() || s == "." || s == ".."));
        }
        let joined = segments.join("/");
        let key = ObjectKey::parse(&joined).unwrap();
        prop_assert_eq!(ObjectKey::parse(key.as_str()).unwrap(), key);
    }

    #[test]
    fn source_urls_parse_any_text_and_never_print_secrets(text in "\\PC{0,64}", secret in "[a-z]{12}", host in "[a-z]{1,10}\\.example", path in "[a-z0-9/]{0,20}") {
        if let Ok(url) = SourceUrl::parse(&text) {
            let again = SourceUrl::parse(url.expose()).unwrap();
            prop_assert_eq!(again.expose(), url.expose());
        }
        let raw = format!("https://user:{secret}@{host}/{path}?sig={secret}");
        let url = SourceUrl::parse(&raw).unwrap();
        prop_assert!(!url.redacted().contains(&secret));
        prop_assert!(!url.to_string().contains(&secret));
        let debug = format!("{:?}", url);
        prop_assert!(!debug.contains(&secret));
    }

    #[test]
    fn destinations_parse_any_text_and_round_trip(text in "\\PC{0,40}", bucket in "[a-z0-9][a-z0-9.-]{2,20}", prefix in "([a-z0-9]{1,8}/){0,3}") {
        if let Ok(d) = Destination::parse(&text) {
            prop_assert_eq!(Destination::parse(&d.to_string()).unwrap(), d);
        }
        let _ = S3Url::parse(&text);
        let raw = format!("s3://{bucket}/{prefix}");
        let d = Destination::parse(&raw).unwrap();
        prop_assert_eq!(Destination::parse(&d.to_string()).unwrap(), d);
        let url = S3Url::parse(&raw).unwrap();
        prop_assert_eq!(url.bucket, bucket);
        prop_assert!(url.is_prefix);
    }

    #[test]
    fn copy_targets_answer_any_dest(dest in "\\PC{0,40}", is_dir in any::<bool>()) {
        let source = SourceUrl::parse("http://h.example/dir/file.bin").unwrap();
        if let Ok(t) = CopyTarget::parse(&dest, &source, is_dir) {
            prop_assert!(!t.key.as_str().is_empty());
        }
    }
}
