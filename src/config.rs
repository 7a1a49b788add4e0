//! Configuration: one optional TOML file, then `SWITCHBOARD_*` environment overrides, then
//! validation into a typed [`Config`].
//!
//! Every key is optional and has a documented default, so `switchboard serve` runs with no file
//! at all. The file is parsed with `deny_unknown_fields`: a misspelt key is an error, not a
//! silently ignored setting. Validation errors name the key (and where the value came from) so an
//! operator can fix the right line.
//!
//! This module owns parsing and validation only; it must not open sockets or files other than the
//! config file itself.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Environment variables read on top of the file. These names are a contract with the
/// groupware's deployment scripts and `docker-compose.yml`.
pub const ENV_DATA_DIR: &str = "SWITCHBOARD_DATA_DIR";
pub const ENV_DATABASE_URL: &str = "SWITCHBOARD_DATABASE_URL";
pub const ENV_HTTP_LISTEN: &str = "SWITCHBOARD_HTTP_LISTEN";
pub const ENV_SIP_LISTEN: &str = "SWITCHBOARD_SIP_LISTEN";
pub const ENV_LOG_FORMAT: &str = "SWITCHBOARD_LOG_FORMAT";
pub const ENV_SIP_REALM: &str = "SWITCHBOARD_SIP_REALM";
pub const ENV_MEDIA_ADDRESS: &str = "SWITCHBOARD_MEDIA_ADDRESS";
pub const ENV_MEDIA_RTP_PORT_MIN: &str = "SWITCHBOARD_MEDIA_RTP_PORT_MIN";
pub const ENV_MEDIA_RTP_PORT_MAX: &str = "SWITCHBOARD_MEDIA_RTP_PORT_MAX";

/// Where the dialplan is read from unless `dialplan` says otherwise.
pub const DEFAULT_DIALPLAN_PATH: &str = "dialplans/default.toml";

/// A configuration error, always naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("invalid value for `{key}` (from {origin}): {reason}")]
    Invalid {
        key: &'static str,
        origin: Origin,
        reason: String,
    },
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Env(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the built-in default"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
        }
    }
}

/// The file as written: every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    log_format: Option<String>,
    dialplan: Option<PathBuf>,
    http: Option<RawHttp>,
    sip: Option<RawSip>,
    registrar: Option<RawRegistrar>,
    security: Option<RawSecurity>,
    calls: Option<RawCalls>,
    media: Option<RawMedia>,
    dns: Option<RawDns>,
    #[serde(default)]
    trunks: Vec<RawTrunk>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    servers: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrunk {
    name: String,
    host: String,
    outbound_proxy: Option<String>,
    transport: Option<String>,
    tls_ca: Option<PathBuf>,
    username: Option<String>,
    auth_username: Option<String>,
    password: Option<String>,
    register: Option<bool>,
    register_expiry_secs: Option<u32>,
    number_format: Option<String>,
    caller_id: Option<String>,
    #[serde(default)]
    inbound_addresses: Vec<String>,
    #[serde(default)]
    dids: Vec<RawDid>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDid {
    number: String,
    extension: Option<String>,
    #[serde(default)]
    fax: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMedia {
    address: Option<String>,
    rtp_port_min: Option<u16>,
    rtp_port_max: Option<u16>,
    threads: Option<usize>,
    kernel_forwarding: Option<bool>,
    timeout_secs: Option<u64>,
    tones: Option<String>,
    ringback_tone: Option<String>,
    busy_tone: Option<String>,
    congestion_tone: Option<String>,
    unreachable_prompt: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalls {
    no_answer_secs: Option<u64>,
    no_answer_status: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistrar {
    min_expires: Option<u32>,
    max_expires: Option<u32>,
    default_expires: Option<u32>,
    nat_max_expires: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    ban_failures: Option<u32>,
    ban_window_secs: Option<u64>,
    ban_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSip {
    /// Either a TOML array of `transport:addr` strings or one comma-separated string.
    listen: Option<ListenList>,
    realm: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    digest_algorithms: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ListenList {
    One(String),
    Many(Vec<String>),
}

impl ListenList {
    fn items(&self) -> Vec<String> {
        match self {
            ListenList::One(s) => split_list(s),
            ListenList::Many(v) => v.iter().map(|s| s.trim().to_owned()).collect(),
        }
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// The port a SIP URI or host without one means (RFC 3261 §19.1.2): 5061 for TLS.
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Tls => 5061,
            Transport::Udp | Transport::Tcp => 5060,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One SIP listening socket: `udp:0.0.0.0:5060`, `tls:[::]:5061`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipListen {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl FromStr for SipListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (proto, addr) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}` is not of the form transport:address:port"))?;
        let transport = match proto.to_ascii_lowercase().as_str() {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            other => {
                return Err(format!(
                    "`{s}`: unknown transport `{other}` (expected udp, tcp or tls)"
                ))
            }
        };
        let addr = addr
            .parse::<SocketAddr>()
            .map_err(|e| format!("`{s}`: `{addr}` is not an address:port ({e})"))?;
        Ok(SipListen { transport, addr })
    }
}

impl fmt::Display for SipListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport, self.addr)
    }
}

impl Serialize for SipListen {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Directory for the SQLite database, received faxes and spooled mail. Default `./data`.
    pub data_dir: PathBuf,
    /// `postgres://…` selects PostgreSQL; anything else (or nothing) is SQLite.
    /// Default `sqlite://<data_dir>/switchboard.db`.
    pub database_url: String,
    /// `human` (default) or `json`.
    pub log_format: LogFormat,
    /// The dialplan file. Default `dialplans/default.toml`; when that default file is absent the
    /// built-in copy of it is used.
    pub dialplan: PathBuf,
    pub http: HttpConfig,
    pub sip: SipConfig,
    pub registrar: RegistrarConfig,
    pub security: SecurityConfig,
    pub calls: CallsConfig,
    pub media: MediaConfig,
    pub dns: DnsConfig,
    /// SIP trunks (`[[trunks]]`), in file order. None by default: internal calls only.
    pub trunks: Vec<TrunkConfig>,
}

/// How trunks' host names are looked up (RFC 3263: SRV, then A/AAAA).
#[derive(Debug, Clone, Default, Serialize)]
pub struct DnsConfig {
    /// Name servers to ask, `ip` or `ip:port`; empty (the default) means the system's
    /// (`/etc/resolv.conf`).
    pub servers: Vec<std::net::SocketAddr>,
}

/// One SIP trunk: an ITSP account the PBX registers with (when it has credentials), sends
/// outside calls through, and takes calls for its DIDs from.
#[derive(Debug, Clone, Serialize)]
pub struct TrunkConfig {
    /// What dialplan routes name in `trunk = "…"`. Letters, digits, `-` and `_`.
    pub name: String,
    /// The ITSP's domain, `host[:port]` (default port 5060): the registrar, the domain of the
    /// numbers we call and, unless `outbound_proxy` is set, where requests go.
    pub host: String,
    /// Where requests go instead of `host`, `host[:port]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound_proxy: Option<String>,
    /// `udp` (the default), `tcp` or `tls` (one connection of ours, opened when first needed
    /// and reused; the ITSP's certificate must chain to `tls_ca` and name the host we connect
    /// to). TLS needs a `tls:` listen address: the ITSP reaches us over it.
    pub transport: Transport,
    /// PEM file of the roots an ITSP's TLS certificate may chain to. Default: the system's
    /// bundle ([`crate::sip::tls::SYSTEM_ROOTS`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// The account (the user part of the registered AOR).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Digest username when it differs from `username`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_username: Option<String>,
    /// Never printed (`check-config` shows `********`).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_redacted"
    )]
    pub password: Option<String>,
    /// Register the account with `host`. Default: true when `username` is set.
    pub register: bool,
    /// Expiry asked for in the REGISTER; refreshed before it runs out. Default 600 s.
    pub register_expiry_secs: u32,
    /// How called numbers are written for this ITSP: `e164` (`+4930123456`, the default),
    /// `digits` (`4930123456`), `international` (`004930123456`) or `national` (`030123456`;
    /// foreign numbers with the international prefix). Needs the dialplan's `[numbering]` for
    /// the last two.
    pub number_format: NumberFormat,
    /// The number sent as caller on outgoing calls of users that have no DID on this trunk.
    /// Default: the first DID, else `username`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller_id: Option<String>,
    /// Extra source addresses the ITSP sends calls from (the resolved `host` and
    /// `outbound_proxy` addresses always count). An INVITE from any of them is a call from
    /// this trunk: it is not challenged, and may only reach DIDs.
    pub inbound_addresses: Vec<std::net::IpAddr>,
    /// The numbers this trunk delivers and where each goes.
    pub dids: Vec<DidConfig>,
}

/// A number the ITSP delivers to us.
#[derive(Debug, Clone, Serialize)]
pub struct DidConfig {
    /// E.164, with `+`.
    pub number: String,
    /// Rings this user's current location.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extension: Option<String>,
    /// A fax number (delivered to the user whose `fax_number` it is).
    pub fax: bool,
}

/// See [`TrunkConfig::number_format`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NumberFormat {
    E164,
    Digits,
    International,
    National,
}

fn serialize_redacted<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("********"),
        None => s.serialize_none(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MediaConfig {
    /// The address phones send RTP to (written into the descriptions we send). Default: the
    /// first SIP listen address when it names one, else the address of the interface with the
    /// default route.
    pub address: Option<std::net::IpAddr>,
    /// RTP ports are even numbers in `rtp_port_min..rtp_port_max` (RTCP takes the next one).
    /// Default 20000-30000.
    pub rtp_port_min: u16,
    pub rtp_port_max: u16,
    /// Relay threads; 0 (the default) means one per CPU.
    pub threads: usize,
    /// Streams that need nothing but forwarding (both parties latched, same codec, nothing
    /// played) are handed to the kernel through nftables (table `ip switchboard`). Needs
    /// CAP_NET_ADMIN, the `nft` command and `net.ipv4.ip_forward=1`; the start fails with the
    /// reason when one is missing. Default false.
    pub kernel_forwarding: bool,
    /// An answered call with no RTP or RTCP from either party for this long is hung up (the
    /// phones vanished without a BYE), unless a party's latest description holds the call.
    /// Default 60 s; 0 turns it off.
    pub timeout_secs: u64,
    /// Tone preset by country: `eu` (ITU-T/CEPT, the default), `us`, `uk`.
    pub tones: String,
    /// Overrides of single tones, as `f1[+f2]/on,off[,on,off…]` (ms), e.g. `425/1000,4000`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ringback_tone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy_tone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub congestion_tone: Option<String>,
    /// A WAV announcement played (once) instead of the congestion tone when a click-to-call's
    /// target cannot be reached. Any rate and channel count; checked at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreachable_prompt: Option<PathBuf>,
}

impl MediaConfig {
    /// The tones to play (validated at load).
    pub fn tones(&self) -> crate::media::tone::Tones {
        let mut t = crate::media::tone::Tones::preset(&self.tones).unwrap_or_default();
        let set = |slot: &mut crate::media::tone::Tone, spec: &Option<String>| {
            if let Some(tone) = spec
                .as_deref()
                .and_then(|s| crate::media::tone::Tone::parse(s).ok())
            {
                *slot = tone;
            }
        };
        set(&mut t.ringback, &self.ringback_tone);
        set(&mut t.busy, &self.busy_tone);
        set(&mut t.congestion, &self.congestion_tone);
        t
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CallsConfig {
    /// How long a call rings before it ends unanswered. Default 45 s.
    pub no_answer_secs: u64,
    /// What the caller then gets: 480 (Temporarily Unavailable, the default) or 408.
    pub no_answer_status: u16,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegistrarConfig {
    /// Shortest registration accepted; shorter gets 423 with Min-Expires. Default 60 s.
    pub min_expires: u32,
    /// Longest registration granted; longer is shortened to this. Default 3600 s.
    pub max_expires: u32,
    /// Used when a REGISTER names no expiry. Default 3600 s.
    pub default_expires: u32,
    /// Longest registration granted to a phone behind NAT over UDP (its Contact is not the
    /// address it sends from): its re-registrations keep the NAT's mapping open, without which
    /// calls to it stop arriving once the mapping times out. Default 60 s; 0 turns it off.
    pub nat_max_expires: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct SecurityConfig {
    /// Failed authentications from one address that trigger a ban. Default 5.
    pub ban_failures: u32,
    /// Window in which those failures must fall. Default 60 s.
    pub ban_window_secs: u64,
    /// How long a ban lasts. Default 600 s.
    pub ban_secs: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpConfig {
    /// Default `0.0.0.0:8080`.
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Serialize)]
pub struct SipConfig {
    /// Default `udp:0.0.0.0:5060, tcp:0.0.0.0:5060`.
    pub listen: Vec<SipListen>,
    /// TLS certificate (PEM) for `tls:` listeners; with `tls_key`. When neither is set, a
    /// self-signed pair is generated into `<data_dir>/tls/`. TLS trunks present the same
    /// certificate to an ITSP that asks for a client certificate (mutual TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Digest algorithms offered in challenges, preferred first: `SHA-256`, `MD5`. Default
    /// `["SHA-256", "MD5"]` (RFC 8760). Phones that read only the first challenge and know only
    /// MD5 (SIPp 3.6, some older desk phones) need `["MD5", "SHA-256"]`.
    pub digest_algorithms: Vec<String>,
    /// Digest realm offered to phones. Phone passwords are stored as digests bound to this realm,
    /// so changing it means setting the phones' passwords again. Default `switchboard`.
    pub realm: String,
}

impl Config {
    /// Loads the file (if any) and the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(path, |k| std::env::var(k).ok())
    }

    /// Like [`Config::load`], with the environment supplied by the caller (tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let (raw, file_origin) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                (Self::parse_raw(&text, p)?, Origin::File(p.to_owned()))
            }
            None => (RawConfig::default(), Origin::Default),
        };
        Self::resolve(raw, file_origin, env)
    }

    /// Parses TOML text as if it were the file at `path`, with no environment (tests).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let p = Path::new("<inline>");
        let raw = Self::parse_raw(text, p)?;
        Self::resolve(raw, Origin::File(p.to_owned()), |_| None)
    }

    fn parse_raw(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    fn resolve(
        raw: RawConfig,
        file: Origin,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        // Pick a value: environment first, then file, then default; remember where it came from.
        let pick = |name: &'static str, file_value: Option<String>| -> (Option<String>, Origin) {
            match env(name).filter(|v| !v.trim().is_empty()) {
                Some(v) => (Some(v), Origin::Env(name)),
                None => match file_value {
                    Some(v) => (Some(v), file.clone()),
                    None => (None, Origin::Default),
                },
            }
        };

        let (data_dir, _) = pick(
            ENV_DATA_DIR,
            raw.data_dir.map(|p| p.to_string_lossy().into_owned()),
        );
        let data_dir = PathBuf::from(data_dir.unwrap_or_else(|| "./data".into()));

        let (database_url, db_origin) = pick(ENV_DATABASE_URL, raw.database_url);
        let database_url = match database_url {
            Some(url) => {
                validate_database_url(&url).map_err(|reason| ConfigError::Invalid {
                    key: "database_url",
                    origin: db_origin,
                    reason,
                })?;
                url
            }
            None => format!("sqlite://{}", data_dir.join("switchboard.db").display()),
        };

        let (log_format, origin) = pick(ENV_LOG_FORMAT, raw.log_format);
        let log_format = match log_format.as_deref().map(str::trim) {
            None | Some("human") => LogFormat::Human,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "log_format",
                    origin,
                    reason: format!("`{other}` is neither `human` nor `json`"),
                })
            }
        };

        let raw_http = raw.http.unwrap_or_default();
        let (http_listen, origin) = pick(ENV_HTTP_LISTEN, raw_http.listen);
        let http_listen = http_listen
            .as_deref()
            .unwrap_or("0.0.0.0:8080")
            .trim()
            .parse::<SocketAddr>()
            .map_err(|e| ConfigError::Invalid {
                key: "http.listen",
                origin,
                reason: format!("not an address:port ({e})"),
            })?;

        let raw_sip = raw.sip.unwrap_or_default();
        let (sip_listen, origin) = match env(ENV_SIP_LISTEN).filter(|v| !v.trim().is_empty()) {
            Some(v) => (Some(split_list(&v)), Origin::Env(ENV_SIP_LISTEN)),
            None => match raw_sip.listen {
                Some(l) => (Some(l.items()), file.clone()),
                None => (None, Origin::Default),
            },
        };
        let sip_listen = sip_listen
            .unwrap_or_else(|| vec!["udp:0.0.0.0:5060".into(), "tcp:0.0.0.0:5060".into()]);
        if sip_listen.is_empty() {
            return Err(ConfigError::Invalid {
                key: "sip.listen",
                origin,
                reason: "at least one listen address is needed".into(),
            });
        }
        let sip_listen = sip_listen
            .iter()
            .map(|s| s.parse::<SipListen>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| ConfigError::Invalid {
                key: "sip.listen",
                origin: origin.clone(),
                reason,
            })?;

        let (realm, origin) = pick(ENV_SIP_REALM, raw_sip.realm);
        let realm = realm.unwrap_or_else(|| "switchboard".into());
        if realm.is_empty()
            || realm
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            return Err(ConfigError::Invalid {
                key: "sip.realm",
                origin,
                reason: "must be non-empty, without quotes, backslashes or control characters"
                    .into(),
            });
        }

        if raw_sip.tls_cert.is_some() != raw_sip.tls_key.is_some() {
            return Err(ConfigError::Invalid {
                key: "sip.tls_cert",
                origin: file.clone(),
                reason: "sip.tls_cert and sip.tls_key must be set together".into(),
            });
        }

        let digest_algorithms = raw_sip
            .digest_algorithms
            .unwrap_or_else(|| vec!["SHA-256".into(), "MD5".into()]);
        if digest_algorithms.is_empty()
            || digest_algorithms
                .iter()
                .any(|a| crate::sip::auth::Algorithm::parse(a).is_none())
        {
            return Err(ConfigError::Invalid {
                key: "sip.digest_algorithms",
                origin: file.clone(),
                reason: "must list one or both of \"SHA-256\" and \"MD5\"".into(),
            });
        }

        let r = raw.registrar.unwrap_or_default();
        let registrar = RegistrarConfig {
            min_expires: r.min_expires.unwrap_or(60),
            max_expires: r.max_expires.unwrap_or(3600),
            default_expires: r.default_expires.unwrap_or(3600),
            // 60 s unless the bounds say otherwise (a configuration from before this key
            // existed must still load).
            nat_max_expires: r.nat_max_expires.unwrap_or_else(|| {
                60.clamp(
                    r.min_expires.unwrap_or(60),
                    r.max_expires
                        .unwrap_or(3600)
                        .max(r.min_expires.unwrap_or(60)),
                )
            }),
        };
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            origin: file.clone(),
            reason: reason.into(),
        };
        if registrar.min_expires == 0 || registrar.min_expires > registrar.max_expires {
            return Err(invalid(
                "registrar.min_expires",
                "must be at least 1 and at most registrar.max_expires",
            ));
        }
        if registrar.nat_max_expires != 0
            && !(registrar.min_expires..=registrar.max_expires).contains(&registrar.nat_max_expires)
        {
            return Err(invalid(
                "registrar.nat_max_expires",
                "must be 0 (off) or lie between registrar.min_expires and registrar.max_expires",
            ));
        }
        if !(registrar.min_expires..=registrar.max_expires).contains(&registrar.default_expires) {
            return Err(invalid(
                "registrar.default_expires",
                "must lie between registrar.min_expires and registrar.max_expires",
            ));
        }
        let c = raw.calls.unwrap_or_default();
        let calls = CallsConfig {
            no_answer_secs: c.no_answer_secs.unwrap_or(45),
            no_answer_status: c.no_answer_status.unwrap_or(480),
        };
        if !(1..=3600).contains(&calls.no_answer_secs) {
            return Err(invalid("calls.no_answer_secs", "must be 1 to 3600"));
        }
        if !matches!(calls.no_answer_status, 408 | 480) {
            return Err(invalid("calls.no_answer_status", "must be 408 or 480"));
        }
        let m = raw.media.unwrap_or_default();
        // A container or a host behind 1:1 NAT is configured through the environment: where
        // phones send RTP, and the ports published for it.
        let (address, address_origin) = pick(ENV_MEDIA_ADDRESS, m.address);
        let address = match address {
            None => None,
            Some(a) => Some(a.trim().parse().map_err(|_| ConfigError::Invalid {
                key: "media.address",
                origin: address_origin,
                reason: "must be an IP address (v4 or v6)".into(),
            })?),
        };
        let port =
            |key: &'static str, name: &'static str, file_value: Option<u16>, default| match pick(
                name,
                file_value.map(|p| p.to_string()),
            ) {
                (None, origin) => Ok((default, origin)),
                (Some(v), origin) => match v.trim().parse::<u16>() {
                    Ok(p) => Ok((p, origin)),
                    Err(_) => Err(ConfigError::Invalid {
                        key,
                        origin,
                        reason: "must be a port number".into(),
                    }),
                },
            };
        let (rtp_port_min, min_origin) = port(
            "media.rtp_port_min",
            ENV_MEDIA_RTP_PORT_MIN,
            m.rtp_port_min,
            20000,
        )?;
        let (rtp_port_max, max_origin) = port(
            "media.rtp_port_max",
            ENV_MEDIA_RTP_PORT_MAX,
            m.rtp_port_max,
            30000,
        )?;
        // The range check below names where its values came from.
        let ports_origin = match min_origin {
            Origin::Default => max_origin,
            o => o,
        };
        let media = MediaConfig {
            address,
            rtp_port_min,
            rtp_port_max,
            threads: m.threads.unwrap_or(0),
            kernel_forwarding: m.kernel_forwarding.unwrap_or(false),
            timeout_secs: m.timeout_secs.unwrap_or(60),
            tones: m.tones.unwrap_or_else(|| "eu".into()),
            ringback_tone: m.ringback_tone,
            busy_tone: m.busy_tone,
            congestion_tone: m.congestion_tone,
            unreachable_prompt: m.unreachable_prompt,
        };
        if crate::media::tone::Tones::preset(&media.tones).is_none() {
            return Err(invalid("media.tones", "must be one of eu, us, uk"));
        }
        // A stream in the kernel shows its traffic only when its counter is read: a timeout
        // near that interval would hang up calls whose media flows.
        let least = 3 * crate::media::netfilter::POLL_EVERY.as_secs();
        if media.kernel_forwarding && (1..least).contains(&media.timeout_secs) {
            return Err(invalid(
                "media.timeout_secs",
                "must be 0 or at least 15 with media.kernel_forwarding",
            ));
        }
        for (key, spec) in [
            ("media.ringback_tone", &media.ringback_tone),
            ("media.busy_tone", &media.busy_tone),
            ("media.congestion_tone", &media.congestion_tone),
        ] {
            if let Some(Err(e)) = spec.as_deref().map(crate::media::tone::Tone::parse) {
                return Err(invalid(key, &e.to_string()));
            }
        }
        if media.rtp_port_min < 1024 || media.rtp_port_max < media.rtp_port_min.saturating_add(8) {
            return Err(ConfigError::Invalid {
                key: "media.rtp_port_min",
                origin: ports_origin,
                reason:
                    "ports must be 1024 or above, with room for at least two calls up to rtp_port_max"
                        .into(),
            });
        }
        let sec = raw.security.unwrap_or_default();
        let security = SecurityConfig {
            ban_failures: sec.ban_failures.unwrap_or(5),
            ban_window_secs: sec.ban_window_secs.unwrap_or(60),
            ban_secs: sec.ban_secs.unwrap_or(600),
        };
        if security.ban_failures == 0 {
            return Err(invalid("security.ban_failures", "must be at least 1"));
        }
        if security.ban_window_secs == 0 {
            return Err(invalid("security.ban_window_secs", "must be at least 1"));
        }

        let dialplan = raw
            .dialplan
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DIALPLAN_PATH));
        let tls_listener = sip_listen.iter().any(|l| l.transport == Transport::Tls);
        let trunks =
            resolve_trunks(raw.trunks, tls_listener).map_err(|reason| ConfigError::Invalid {
                key: "trunks",
                origin: file.clone(),
                reason,
            })?;

        let dns = DnsConfig {
            servers: raw
                .dns
                .and_then(|d| d.servers)
                .unwrap_or_default()
                .iter()
                .map(|s| {
                    let s = s.trim();
                    s.parse::<std::net::SocketAddr>()
                        .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
                        .map_err(|_| ConfigError::Invalid {
                            key: "dns.servers",
                            origin: file.clone(),
                            reason: format!("{s:?} is not an IP address or ip:port"),
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Config {
            data_dir,
            database_url,
            log_format,
            dialplan,
            http: HttpConfig {
                listen: http_listen,
            },
            sip: SipConfig {
                listen: sip_listen,
                realm,
                tls_cert: raw_sip.tls_cert,
                tls_key: raw_sip.tls_key,
                digest_algorithms,
            },
            registrar,
            security,
            calls,
            media,
            dns,
            trunks,
        })
    }

    /// The effective configuration as TOML, as `check-config` prints it.
    pub fn to_toml(&self) -> String {
        // Serialising our own plain structs cannot fail; fall back to Debug just in case.
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n{self:?}"))
    }

    /// Loads the configured dialplan (see [`Config::dialplan`]).
    /// Routes naming a trunk are checked against `trunks` when any is configured.
    pub fn open_dialplan(&self) -> Result<crate::routing::DialplanFile, crate::routing::LoadError> {
        crate::routing::DialplanFile::open_with_trunks(
            &self.dialplan,
            self.dialplan == Path::new(DEFAULT_DIALPLAN_PATH),
            self.trunks.iter().map(|t| t.name.clone()).collect(),
        )
    }

    /// True when the store is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        is_postgres_url(&self.database_url)
    }
}

/// Checks the `[[trunks]]` tables; errors name the trunk and the field.
fn resolve_trunks(raw: Vec<RawTrunk>, tls_listener: bool) -> Result<Vec<TrunkConfig>, String> {
    let mut out: Vec<TrunkConfig> = Vec::with_capacity(raw.len());
    for (i, t) in raw.into_iter().enumerate() {
        let name = t.name.trim().to_owned();
        let what = if name.is_empty() {
            format!("trunk #{}", i + 1)
        } else {
            format!("trunk '{name}'")
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "{what}: `name` must be letters, digits, '-' or '_'"
            ));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(format!("{what}: the name is used twice"));
        }
        let host_port_ok = |v: &str| crate::trunks::parse_host_port(v).is_some();
        if !host_port_ok(&t.host) {
            return Err(format!(
                "{what}: `host` must be host[:port], got `{}`",
                t.host
            ));
        }
        if let Some(p) = &t.outbound_proxy {
            if !host_port_ok(p) {
                return Err(format!(
                    "{what}: `outbound_proxy` must be host[:port], got `{p}`"
                ));
            }
        }
        let transport = match t
            .transport
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("udp") => Transport::Udp,
            Some("tcp") => Transport::Tcp,
            Some("tls") => Transport::Tls,
            Some(other) => {
                return Err(format!(
                    "{what}: unknown transport `{other}` (udp, tcp or tls)"
                ))
            }
        };
        match (&t.tls_ca, transport) {
            (Some(_), Transport::Udp | Transport::Tcp) => {
                return Err(format!("{what}: `tls_ca` is for `transport = \"tls\"`"));
            }
            (ca, Transport::Tls) => {
                let roots = ca
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(crate::sip::tls::SYSTEM_ROOTS));
                if let Err(e) = crate::sip::tls::connector(&roots, None) {
                    return Err(format!("{what}: tls_ca: {e}"));
                }
                if !tls_listener {
                    return Err(format!(
                        "{what}: `transport = \"tls\"` needs a `tls:` address in sip.listen (the ITSP reaches us over it)"
                    ));
                }
            }
            _ => {}
        }
        let token_ok = |v: &str| {
            !v.is_empty()
                && !v
                    .chars()
                    .any(|c| c.is_control() || c == '"' || c == '\\' || c == '@' || c == ' ')
        };
        for (field, v) in [
            ("username", &t.username),
            ("auth_username", &t.auth_username),
        ] {
            if v.as_deref().is_some_and(|v| !token_ok(v)) {
                return Err(format!(
                    "{what}: `{field}` must not be empty or hold spaces, quotes or '@'"
                ));
            }
        }
        if t.password.is_some() && t.username.is_none() {
            return Err(format!("{what}: `password` needs `username`"));
        }
        let register = t.register.unwrap_or(t.username.is_some());
        if register && (t.username.is_none() || t.password.is_none()) {
            return Err(format!(
                "{what}: `register = true` needs `username` and `password`"
            ));
        }
        let register_expiry_secs = t.register_expiry_secs.unwrap_or(600);
        if !(60..=86_400).contains(&register_expiry_secs) {
            return Err(format!(
                "{what}: `register_expiry_secs` must be 60 to 86400"
            ));
        }
        let number_format = match t.number_format.as_deref() {
            None | Some("e164") => NumberFormat::E164,
            Some("digits") => NumberFormat::Digits,
            Some("international") => NumberFormat::International,
            Some("national") => NumberFormat::National,
            Some(other) => {
                return Err(format!(
                "{what}: unknown number_format `{other}` (e164, digits, international or national)"
            ))
            }
        };
        let is_e164 = |n: &str| {
            n.strip_prefix('+').is_some_and(|d| {
                (2..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit())
            })
        };
        let is_number = |n: &str| {
            let d = n.strip_prefix('+').unwrap_or(n);
            !d.is_empty() && d.len() <= 20 && d.bytes().all(|b| b.is_ascii_digit())
        };
        if let Some(c) = &t.caller_id {
            if !is_number(c) {
                return Err(format!("{what}: `caller_id` must be a number, got `{c}`"));
            }
        }
        let mut inbound_addresses = Vec::with_capacity(t.inbound_addresses.len());
        for a in &t.inbound_addresses {
            inbound_addresses.push(
                a.trim().parse().map_err(|_| {
                    format!("{what}: inbound_addresses: `{a}` is not an IP address")
                })?,
            );
        }
        let mut dids: Vec<DidConfig> = Vec::with_capacity(t.dids.len());
        for d in t.dids {
            let number = crate::routing::strip_separators(&d.number);
            if !is_e164(&number) {
                return Err(format!(
                    "{what}: DID `{}` must be written in E.164 (`+` and digits)",
                    d.number
                ));
            }
            if dids.iter().any(|o| o.number == number)
                || out
                    .iter()
                    .any(|o| o.dids.iter().any(|o| o.number == number))
            {
                return Err(format!("{what}: DID `{number}` is listed twice"));
            }
            match (&d.extension, d.fax) {
                (Some(_), true) | (None, false) => {
                    return Err(format!(
                        "{what}: DID `{number}` needs exactly one of `extension = \"…\"` or `fax = true`"
                    ))
                }
                (Some(e), false) if !is_number(e) || e.starts_with('+') => {
                    return Err(format!(
                        "{what}: DID `{number}`: extension `{e}` must be digits"
                    ))
                }
                _ => {}
            }
            dids.push(DidConfig {
                number,
                extension: d.extension,
                fax: d.fax,
            });
        }
        out.push(TrunkConfig {
            name,
            host: t.host.trim().to_owned(),
            outbound_proxy: t.outbound_proxy.map(|p| p.trim().to_owned()),
            transport,
            tls_ca: t.tls_ca,
            username: t.username,
            auth_username: t.auth_username,
            password: t.password,
            register,
            register_expiry_secs,
            number_format,
            caller_id: t.caller_id,
            inbound_addresses,
            dids,
        });
    }
    Ok(out)
}

/// `postgres://` or `postgresql://`.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

fn validate_database_url(url: &str) -> Result<(), String> {
    let url = url.trim();
    if is_postgres_url(url) || url.starts_with("sqlite:") {
        Ok(())
    } else {
        Err(format!(
            "`{url}` must start with postgres://, postgresql:// or sqlite:"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn defaults_need_no_file() {
        let c = Config::load_with_env(None, |_| None).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.database_url, "sqlite://./data/switchboard.db");
        assert_eq!(c.http.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.sip.listen.len(), 2);
        assert_eq!(c.sip.listen[0].transport, Transport::Udp);
        assert_eq!(c.sip.listen[1].transport, Transport::Tcp);
        assert_eq!(c.sip.realm, "switchboard");
        assert!(!c.is_postgres());
    }

    #[test]
    fn environment_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sb.toml");
        std::fs::write(
            &path,
            "data_dir = \"/var/lib/sb\"\n[http]\nlisten = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let c = Config::load_with_env(
            Some(&path),
            env_of(&[
                (ENV_HTTP_LISTEN, "127.0.0.1:9090"),
                (
                    ENV_SIP_LISTEN,
                    "udp:0.0.0.0:5060, tcp:0.0.0.0:5060,tls:[::]:5061",
                ),
                (ENV_DATABASE_URL, "postgres://u@h/db"),
            ]),
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/sb"));
        assert_eq!(c.http.listen, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(c.sip.listen.len(), 3);
        assert_eq!(c.sip.listen[2].transport, Transport::Tls);
        assert_eq!(c.sip.listen[2].addr, "[::]:5061".parse().unwrap());
        assert!(c.is_postgres());
    }

    /// A file written before `nat_max_expires` existed, with a longer minimum, still loads:
    /// the NAT limit follows the bounds.
    #[test]
    fn nat_max_expires_defaults_within_the_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sb.toml");
        std::fs::write(&path, "[registrar]\nmin_expires = 120\n").unwrap();
        let c = Config::load_with_env(Some(&path), env_of(&[])).unwrap();
        assert_eq!(c.registrar.nat_max_expires, 120);
        std::fs::write(&path, "[registrar]\nnat_max_expires = 30\n").unwrap();
        let e = Config::load_with_env(Some(&path), env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("registrar.nat_max_expires"), "{e}");
    }

    #[test]
    fn media_address_and_ports_from_the_environment() {
        let c = Config::load_with_env(
            None,
            env_of(&[
                (ENV_MEDIA_ADDRESS, "203.0.113.7"),
                (ENV_MEDIA_RTP_PORT_MIN, "40000"),
                (ENV_MEDIA_RTP_PORT_MAX, "40199"),
            ]),
        )
        .unwrap();
        assert_eq!(c.media.address, Some("203.0.113.7".parse().unwrap()));
        assert_eq!((c.media.rtp_port_min, c.media.rtp_port_max), (40000, 40199));
        let e = Config::load_with_env(None, env_of(&[(ENV_MEDIA_ADDRESS, "pbx.example")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("media.address") && e.contains(ENV_MEDIA_ADDRESS),
            "{e}"
        );
        let e = Config::load_with_env(None, env_of(&[(ENV_MEDIA_RTP_PORT_MAX, "70000")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("media.rtp_port_max"), "{e}");
        let e = Config::load_with_env(None, env_of(&[(ENV_MEDIA_RTP_PORT_MIN, "29999")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(ENV_MEDIA_RTP_PORT_MIN), "{e}");
    }

    #[test]
    fn data_dir_moves_the_default_database() {
        let c = Config::load_with_env(None, env_of(&[(ENV_DATA_DIR, "/srv/sb")])).unwrap();
        assert_eq!(c.database_url, "sqlite:///srv/sb/switchboard.db");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Config::load_with_env(None, env_of(&[(ENV_SIP_LISTEN, "udpx:1.2.3.4:5060")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sip.listen"), "{e}");
        assert!(e.contains("SWITCHBOARD_SIP_LISTEN"), "{e}");
        assert!(e.contains("unknown transport"), "{e}");

        let e = Config::from_toml("[http]\nlisten = \"nope\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.listen"), "{e}");

        let e = Config::from_toml("log_format = \"xml\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("log_format"), "{e}");

        let e = Config::from_toml("database_url = \"mysql://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("database_url"), "{e}");

        let kernel = "[media]\nkernel_forwarding = true\ntimeout_secs = ";
        let e = Config::from_toml(&format!("{kernel}10\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("media.timeout_secs"), "{e}");
        assert!(e.contains("at least 15"), "{e}");
        for ok in ["0", "15", "60"] {
            Config::from_toml(&format!("{kernel}{ok}\n")).unwrap();
        }
        Config::from_toml("[media]\ntimeout_secs = 10\n").unwrap();
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = Config::from_toml("htp_listen = \"1\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("htp_listen"), "{e}");
    }

    #[test]
    fn sip_listen_accepts_a_toml_array() {
        let c = Config::from_toml("[sip]\nlisten = [\"udp:127.0.0.1:5070\"]\n").unwrap();
        assert_eq!(c.sip.listen, vec!["udp:127.0.0.1:5070".parse().unwrap()]);
    }

    #[test]
    fn the_example_file_is_valid_and_shows_the_defaults() {
        let example = Config::from_toml(include_str!("../switchboard.example.toml")).unwrap();
        let defaults = Config::load_with_env(None, |_| None).unwrap();
        assert_eq!(example.to_toml(), defaults.to_toml());
    }

    #[test]
    fn digest_algorithms_are_checked() {
        let e = Config::from_toml("[sip]\ndigest_algorithms = [\"SHA-512\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sip.digest_algorithms"), "{e}");
        let c = Config::from_toml("[sip]\ndigest_algorithms = [\"MD5\"]\n").unwrap();
        assert_eq!(c.sip.digest_algorithms, ["MD5"]);
    }

    #[test]
    fn effective_config_renders_as_toml() {
        let c = Config::load_with_env(None, |_| None).unwrap();
        let text = c.to_toml();
        assert!(text.contains("listen = \"0.0.0.0:8080\""), "{text}");
        assert!(text.contains("udp:0.0.0.0:5060"), "{text}");
    }

    #[test]
    fn tls_trunks_need_a_tls_listener_and_readable_roots() {
        let ca = tempfile::NamedTempFile::new().unwrap();
        let pair = rcgen::generate_simple_self_signed(vec!["itsp.test".to_string()]).unwrap();
        std::fs::write(ca.path(), pair.cert.pem()).unwrap();
        let trunk = |listen: &str, extra: &str| {
            Config::from_toml(&format!(
                "[sip]\nlisten = [{listen}]\n[[trunks]]\nname = \"t\"\nhost = \"itsp.test\"\n{extra}"
            ))
        };
        let both = "\"udp:127.0.0.1:5060\", \"tls:127.0.0.1:5061\"";
        let with_ca = format!("transport = \"tls\"\ntls_ca = {:?}\n", ca.path());
        let c = trunk(both, &with_ca).unwrap();
        assert_eq!(c.trunks[0].transport, Transport::Tls);
        let e = trunk("\"udp:127.0.0.1:5060\"", &with_ca)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a `tls:` address"), "{e}");
        let e = trunk(
            both,
            "transport = \"tls\"\ntls_ca = \"/nonexistent/ca.pem\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("tls_ca") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        let e = trunk(both, &format!("tls_ca = {:?}\n", ca.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`tls_ca` is for"), "{e}");
        let e = trunk(both, "transport = \"sctp\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("udp, tcp or tls"), "{e}");
    }
}
