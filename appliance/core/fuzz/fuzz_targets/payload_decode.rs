//! Arbitrary bytes into the payload decoder: user-data is written by whoever can
//! launch or rebuild the instance, and the decoder runs first thing at boot.
//!
//! Checks, besides "never panics":
//! - `decode` and `decode_file` share one reader, so they must agree on every
//!   input: the same error before the JSON, the same config after it;
//! - whatever decodes re-encodes, in every encoding `encode` accepts, to a payload
//!   that decodes to the same config.
#![no_main]

use cloudpipe_core::config::Config;
use cloudpipe_core::payload::{decode, decode_file, encode, Encoding, Payload, PayloadError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = decode(data);
    let file = decode_file(data);
    match decoded {
        Ok(Payload::Cloudpipe(config)) => {
            let Ok(Ok(f)) = file else {
                panic!("decode accepted a config that decode_file did not: {file:?}");
            };
            assert_eq!(Config::try_from(f).as_ref(), Ok(&*config));
            round_trip(&config);
        }
        Ok(Payload::Nova(nova)) => {
            assert_eq!(file, Ok(Err(PayloadError::NotZip(nova.migration_hint()))));
        }
        Err(PayloadError::Config(e)) => {
            let Ok(Ok(f)) = file else {
                panic!("config rejected by decode but not read by decode_file: {file:?}");
            };
            assert_eq!(Config::try_from(f), Err(e));
        }
        // Everything up to and including the JSON syntax fails both the same way.
        Err(e) => assert_eq!(file, Err(e)),
    }
});

fn round_trip(config: &Config) {
    for encoding in [Encoding::Zip, Encoding::Guest, Encoding::Nova] {
        match encode(config, encoding) {
            Ok(bytes) => assert_eq!(
                decode(&bytes),
                Ok(Payload::Cloudpipe(Box::new(config.clone()))),
                "{encoding:?} form does not decode back to the same config"
            ),
            // Nova, or decode itself, would refuse it: nothing to round-trip.
            Err(PayloadError::TooLarge { .. } | PayloadError::MemberTooLarge { .. }) => {}
            Err(e) => panic!("encode failed on a decoded config ({encoding:?}): {e}"),
        }
    }
}
