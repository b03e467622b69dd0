//! The CLI's side of the API: where the server is, which token to present, and how an API error
//! becomes a message for a person.

use std::path::PathBuf;

use reqwest::Method;
use serde_json::Value;

/// How a client command reaches the server.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The civicflow server.
    #[arg(
        long,
        env = "CIVICFLOW_URL",
        default_value = "http://127.0.0.1:7100",
        global = true
    )]
    pub server: String,
    /// The API token; default: the admin token `serve` wrote to the data directory.
    #[arg(long, env = "CIVICFLOW_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// The data directory whose `admin.token` is used when no token is given.
    #[arg(long, env = "CIVICFLOW_DATA", default_value = "data", global = true)]
    pub data: PathBuf,
    /// Print the API's JSON instead of tables, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no API token: give --token or set CIVICFLOW_TOKEN (an admin issues tokens with `civicflow tokens issue`)"
    )]
    NoToken,
    #[error("cannot reach civicflow at {server}: {detail}")]
    Unreachable { server: String, detail: String },
    /// The API refused: its code, message and offending fields.
    #[error("{code}: {message}{}", fields.iter().map(|f| format!("\n  {f}")).collect::<String>())]
    Api {
        status: u16,
        code: String,
        message: String,
        fields: Vec<String>,
    },
    #[error("{0}")]
    Input(String),
}

enum Body<'a> {
    Json(&'a Value),
    Yaml(String),
}

pub struct Client {
    http: reqwest::Client,
    server: String,
    token: String,
    pub json: bool,
}

impl Client {
    pub fn new(c: &Connection) -> Result<Client, ClientError> {
        let token = match &c.token {
            Some(t) => t.trim().to_owned(),
            None => std::fs::read_to_string(c.data.join(crate::cli::serve::ADMIN_TOKEN_FILE))
                .map(|t| t.trim().to_owned())
                .map_err(|_| ClientError::NoToken)?,
        };
        Ok(Client {
            http: reqwest::Client::new(),
            server: c.server.trim_end_matches('/').to_owned(),
            token,
            json: c.json,
        })
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.send(Method::GET, path, query, None, None).await
    }

    pub async fn post(
        &self,
        path: &str,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<Value, ClientError> {
        self.send(
            Method::POST,
            path,
            &[],
            Some(Body::Json(body)),
            idempotency_key,
        )
        .await
    }

    /// Posts a YAML document as it is.
    pub async fn post_yaml(&self, path: &str, text: String) -> Result<Value, ClientError> {
        self.send(Method::POST, path, &[], Some(Body::Yaml(text)), None)
            .await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.send(Method::DELETE, path, &[], None, None).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Body<'_>>,
        idempotency_key: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.server))
            .bearer_auth(&self.token)
            .query(query);
        match body {
            Some(Body::Json(v)) => request = request.json(v),
            Some(Body::Yaml(text)) => {
                request = request
                    .header("content-type", "application/yaml")
                    .body(text);
            }
            None => {}
        }
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            server: self.server.clone(),
            detail: e.to_string(),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        Err(api_error(status, &body))
    }

    /// `GET path`, its body written to `out` as it comes; how many bytes.
    pub async fn download(
        &self,
        path: &str,
        out: &mut impl std::io::Write,
    ) -> Result<u64, ClientError> {
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            server: self.server.clone(),
            detail: e.to_string(),
        };
        let mut response = self
            .http
            .get(format!("{}{path}", self.server))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            return Err(api_error(status, &body));
        }
        let mut bytes = 0;
        while let Some(piece) = response.chunk().await.map_err(unreachable)? {
            out.write_all(&piece)
                .map_err(|e| ClientError::Input(format!("cannot write: {e}")))?;
            bytes += piece.len() as u64;
        }
        Ok(bytes)
    }
}

/// An API refusal as the CLI reports it.
fn api_error(status: reqwest::StatusCode, body: &Value) -> ClientError {
    let error = &body["error"];
    let text = |v: &Value| super::table::printable(v.as_str().unwrap_or_default());
    let message = text(&error["message"]);
    // A field the message already states (a located diagnostic) is not repeated.
    let fields = error["fields"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .filter(|f| !message.contains(&text(&f["message"])))
                .map(|f| format!("{}: {}", text(&f["field"]), text(&f["message"])))
                .collect()
        })
        .unwrap_or_default();
    ClientError::Api {
        status: status.as_u16(),
        code: error["code"]
            .as_str()
            .map_or_else(|| status.to_string(), str::to_owned),
        message,
        fields,
    }
}

/// Reads a file, or standard input for `-`.
pub fn read_text(path: &std::path::Path) -> Result<String, ClientError> {
    if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| ClientError::Input(format!("cannot read standard input: {e}")))
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| ClientError::Input(format!("cannot read {}: {e}", path.display())))
    }
}

/// Reads a JSON document from a file, or from standard input for `-`.
pub fn read_json(path: &std::path::Path) -> Result<Value, ClientError> {
    let text = read_text(path)?;
    serde_json::from_str(&text)
        .map_err(|e| ClientError::Input(format!("{} is not JSON: {e}", path.display())))
}
