//! `rollout schema`: the JSON Schema of the `deploy` output on stdout (see
//! [`rollout_core::jsonschema`]).

use crate::cli::SchemaArgs;
use rollout_core::error::Error;
use rollout_core::jsonschema::{deploy_schema, ExtraKeys};

pub fn run(args: &SchemaArgs) -> Result<(), Error> {
    let extra = if args.strict_keys {
        ExtraKeys::Refused
    } else {
        ExtraKeys::Allowed
    };
    let text = serde_json::to_string_pretty(&deploy_schema(extra)).expect("a JSON value serialises");
    println!("{text}");
    Ok(())
}
