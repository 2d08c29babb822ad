//! The one way an AWS SDK client is configured: the standard configuration
//! chain (environment, profile, SSO, process credentials, IMDS…) with one
//! HTTPS client, hyper 1 + rustls on the `ring` provider, the same TLS
//! stack as the source client (reqwest) and the job store (sqlx). The AWS
//! crates are built without their default features, so no second, older
//! TLS stack (hyper 0.14, rustls 0.21) and no aws-lc are compiled in.

use aws_sdk_s3::config::SharedHttpClient;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

/// The HTTPS client every SDK client uses (the AWS crates bring none).
pub fn https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// `aws_config::defaults` with [`https_client`].
pub fn config_loader() -> aws_config::ConfigLoader {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(https_client())
}
