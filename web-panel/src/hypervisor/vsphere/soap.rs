//! A small typed client for the vSphere Web Services API (SOAP over HTTPS),
//! under the `vsphere` driver: the envelope and its escaping, the session
//! (login, the session cookie, logout, one re-login when vCenter forgot
//! us), faults, the PropertyCollector, task polling, and the few methods the
//! driver calls, each a typed function.
//!
//! Requests are written as text with every value escaped by quick-xml;
//! answers are read by quick-xml into a small tree ([`Node`]: local name,
//! `xsi:type`, text, children), which the typed functions pick apart. The
//! tree is also what lets a device read from vSphere be sent back edited
//! ([`Node::to_xml`]) without modelling the whole device hierarchy.
//!
//! The password is read by the caller and passed to [`Client::login`]; it
//! is never logged, and request bodies are never logged at all.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quick_xml::escape::escape;
use quick_xml::events::Event;
use quick_xml::Reader;

/// The API version requested (`SOAPAction: urn:vim25/<version>`). Every
/// method and property the driver uses exists in 6.7 and later; 7.0 is
/// what govmomi's simulator speaks, and vCenter 8 still serves it.
pub const API_VERSION: &str = "7.0";

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum SoapError {
    /// The request never got an answer: connection refused or reset, DNS,
    /// TLS handshake, timeout.
    #[error("{context}: {message}")]
    Transport {
        context: String,
        message: String,
        /// The server's certificate was refused (unknown issuer, wrong
        /// name, expired): retrying cannot help until the CA is configured.
        untrusted: bool,
        timeout: bool,
    },
    /// An HTTP status without a SOAP fault in the body.
    #[error("{context}: HTTP {status}")]
    Http { context: String, status: u16 },
    /// A vSphere fault (`NotFound`, `InvalidLogin`, `TaskInProgress`, …),
    /// from the SOAP answer or a task's `info.error`.
    #[error("{context}: {kind}: {message}")]
    Fault {
        context: String,
        /// The fault's type, without the `Fault` suffix of its element.
        kind: String,
        message: String,
    },
    /// The answer is not what the API promises.
    #[error("{context}: {message}")]
    Protocol { context: String, message: String },
    /// A task did not finish in time (it may still finish).
    #[error("{context}: task {task} still running after {waited:?}")]
    TaskTimeout {
        context: String,
        task: String,
        waited: Duration,
    },
}

impl SoapError {
    /// The fault's type, when this is a vSphere fault.
    pub fn fault_kind(&self) -> Option<&str> {
        match self {
            SoapError::Fault { kind, .. } => Some(kind),
            _ => None,
        }
    }

    fn protocol(context: &str, message: impl Into<String>) -> SoapError {
        SoapError::Protocol {
            context: context.to_string(),
            message: message.into(),
        }
    }
}

pub type SoapResult<T> = Result<T, SoapError>;

/// A managed object reference: its type and its id (`VirtualMachine`, `vm-42`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MoRef {
    pub kind: String,
    pub value: String,
}

impl MoRef {
    pub fn new(kind: &str, value: &str) -> MoRef {
        MoRef {
            kind: kind.to_string(),
            value: value.to_string(),
        }
    }

    /// `<tag type="Kind">value</tag>`.
    pub fn xml(&self, tag: &str) -> String {
        format!(
            "<{tag} type=\"{}\">{}</{tag}>",
            escape(self.kind.as_str()),
            escape(self.value.as_str())
        )
    }

    /// The reference as an element named `tag`, to put inside a [`Node`]
    /// that is sent back.
    pub fn node(&self, tag: &str) -> Node {
        Node {
            name: tag.to_string(),
            attrs: vec![("type".to_string(), self.kind.clone())],
            text: self.value.clone(),
            ..Node::default()
        }
    }

    /// A reference read from an answer (`type` attribute and text).
    pub fn from_node(node: &Node) -> Option<MoRef> {
        let kind = node.attr("type")?;
        Some(MoRef::new(kind, node.text.trim()))
    }
}

impl std::fmt::Display for MoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// One XML element of an answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    /// Local name, without namespace prefix.
    pub name: String,
    /// Attributes other than `xsi:type`, by local name.
    pub attrs: Vec<(String, String)>,
    /// `xsi:type`, without its prefix (`VirtualDisk`, `string`).
    pub xsi_type: Option<String>,
    /// The element's own text (entities resolved).
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    /// An element holding only text, for building a data object to send.
    pub fn leaf(name: &str, text: &str) -> Node {
        Node {
            name: name.to_string(),
            text: text.to_string(),
            ..Node::default()
        }
    }

    /// An element of data type `xsi_type` with `children`, for building a
    /// data object to send.
    pub fn typed(name: &str, xsi_type: &str, children: Vec<Node>) -> Node {
        Node {
            name: name.to_string(),
            xsi_type: Some(xsi_type.to_string()),
            children,
            ..Node::default()
        }
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn child_mut(&mut self, name: &str) -> Option<&mut Node> {
        self.children.iter_mut().find(|c| c.name == name)
    }

    /// Every child named `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// Follows a path of child names (`info/state`).
    pub fn path(&self, path: &str) -> Option<&Node> {
        path.split('/').try_fold(self, |n, part| n.child(part))
    }

    /// The trimmed text at `path`.
    pub fn text_at(&self, path: &str) -> Option<&str> {
        self.path(path).map(|n| n.text.trim())
    }

    /// The element written back as XML under the tag `tag`, with its
    /// `xsi:type` and attributes, for sending a read object back.
    pub fn to_xml(&self, tag: &str) -> String {
        let mut out = String::new();
        self.write_xml(tag, &mut out);
        out
    }

    fn write_xml(&self, tag: &str, out: &mut String) {
        out.push('<');
        out.push_str(tag);
        for (k, v) in &self.attrs {
            let _ = write!(out, " {}=\"{}\"", k, escape(v.as_str()));
        }
        if let Some(t) = &self.xsi_type {
            let _ = write!(out, " xsi:type=\"{}\"", escape(t.as_str()));
        }
        out.push('>');
        if self.children.is_empty() {
            out.push_str(&escape(self.text.as_str()));
        }
        for c in &self.children {
            c.write_xml(&c.name, out);
        }
        let _ = write!(out, "</{tag}>");
    }

    /// Parses an XML document into its root element.
    pub fn parse(xml: &str) -> Result<Node, String> {
        let mut reader = Reader::from_str(xml);
        reader.config_mut().trim_text(false);
        let mut stack: Vec<Node> = vec![Node::default()];
        loop {
            let event = reader
                .read_event()
                .map_err(|e| format!("at byte {}: {e}", reader.buffer_position()))?;
            match event {
                Event::Start(e) => stack.push(Self::open(&e)?),
                Event::Empty(e) => {
                    let node = Self::open(&e)?;
                    stack.last_mut().expect("root").children.push(node);
                }
                Event::End(_) => {
                    let node = stack.pop().expect("balanced by the reader");
                    let parent = stack.last_mut().ok_or("unbalanced end tag")?;
                    parent.children.push(node);
                }
                Event::Text(t) => {
                    stack
                        .last_mut()
                        .expect("root")
                        .text
                        .push_str(&t.xml10_content());
                }
                Event::CData(t) => {
                    stack
                        .last_mut()
                        .expect("root")
                        .text
                        .push_str(&t.into_inner());
                }
                Event::GeneralRef(r) => {
                    let resolved = if r.is_char_ref() {
                        r.resolve_char_ref()
                            .map_err(|e| e.to_string())?
                            .map(String::from)
                    } else {
                        quick_xml::escape::resolve_predefined_entity(&r).map(String::from)
                    }
                    .ok_or("unknown entity reference")?;
                    stack.last_mut().expect("root").text.push_str(&resolved);
                }
                Event::Eof => break,
                _ => {}
            }
        }
        if stack.len() != 1 {
            return Err("unterminated element".into());
        }
        let mut root = stack.pop().expect("root");
        match root.children.len() {
            1 => Ok(root.children.remove(0)),
            n => Err(format!("{n} root elements")),
        }
    }

    fn open(e: &quick_xml::events::BytesStart<'_>) -> Result<Node, String> {
        let name = e.local_name().as_ref().to_string();
        let mut node = Node {
            name,
            ..Node::default()
        };
        for a in e.attributes() {
            let a = a.map_err(|e| e.to_string())?;
            let key = a.key.as_ref().to_string();
            let value = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| e.to_string())?
                .into_owned();
            if key.starts_with("xmlns") {
                continue;
            }
            let local = key.rsplit(':').next().unwrap_or(&key).to_string();
            if local == "type" && key.contains(':') {
                // xsi:type; its value may carry a prefix of its own.
                let t = value.rsplit(':').next().unwrap_or(&value).to_string();
                node.xsi_type = Some(t);
            } else {
                node.attrs.push((local, value));
            }
        }
        Ok(node)
    }
}

/// Writes the body of one method call: `<Method xmlns="urn:vim25">…</Method>`.
#[derive(Debug, Clone)]
pub struct Call {
    method: String,
    body: String,
}

impl Call {
    /// A call of `method` on `this`.
    pub fn new(method: &str, this: &MoRef) -> Call {
        Call {
            method: method.to_string(),
            body: this.xml("_this"),
        }
    }

    pub fn moref(mut self, tag: &str, r: &MoRef) -> Call {
        self.body.push_str(&r.xml(tag));
        self
    }

    /// `<tag>value</tag>`, escaped.
    pub fn text(mut self, tag: &str, value: &str) -> Call {
        let _ = write!(self.body, "<{tag}>{}</{tag}>", escape(value));
        self
    }

    pub fn bool(self, tag: &str, value: bool) -> Call {
        self.text(tag, if value { "true" } else { "false" })
    }

    /// A fragment already written as XML (by [`Call`]'s helpers or
    /// [`Node::to_xml`]).
    pub fn raw(mut self, xml: &str) -> Call {
        self.body.push_str(xml);
        self
    }

    pub fn method(&self) -> &str {
        &self.method
    }

    fn envelope(&self) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
             xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" \
             xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\
             <soapenv:Body><{m} xmlns=\"urn:vim25\">{b}</{m}></soapenv:Body></soapenv:Envelope>",
            m = self.method,
            b = self.body
        )
    }
}

/// `<tag>value</tag>` with `value` escaped, for building nested data objects.
pub fn el(tag: &str, value: &str) -> String {
    format!("<{tag}>{}</{tag}>", escape(value))
}

/// An `OptionValue` (extraConfig entry) with a string value.
pub fn option_value(tag: &str, key: &str, value: &str) -> String {
    format!(
        "<{tag} xsi:type=\"OptionValue\">{}<value xsi:type=\"xsd:string\">{}</value></{tag}>",
        el("key", key),
        escape(value)
    )
}

/// The references the rest of the API hangs from (`ServiceContent`).
#[derive(Debug, Clone)]
pub struct ServiceContent {
    pub root_folder: MoRef,
    pub property_collector: MoRef,
    pub search_index: MoRef,
    pub session_manager: MoRef,
    /// `about.apiType`: `VirtualCenter` or `HostAgent`.
    pub api_type: String,
    pub api_version: String,
}

/// One object's properties, as `RetrievePropertiesEx` returns them.
#[derive(Debug, Clone)]
pub struct ObjectProps {
    pub obj: MoRef,
    /// `(property path, value node)`; a property that is unset is absent.
    pub props: Vec<(String, Node)>,
}

impl ObjectProps {
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.props.iter().find(|(p, _)| p == path).map(|(_, n)| n)
    }

    pub fn text(&self, path: &str) -> Option<&str> {
        self.get(path).map(|n| n.text.trim())
    }
}

/// A session with one vCenter or ESXi SDK endpoint.
///
/// The session cookie is shared by every call on the client; calls may run
/// concurrently. [`Client::login`] may be called again at any time (after
/// vCenter expired the session, say).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    url: String,
    cookie: Arc<Mutex<Option<String>>>,
    content: Arc<Mutex<Option<ServiceContent>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The cookie is a bearer credential: never shown.
        f.debug_struct("Client").field("url", &self.url).finish()
    }
}

impl Client {
    /// A client of the SDK endpoint `url` (`https://host/sdk`) over `http`,
    /// which carries the TLS configuration and timeouts.
    pub fn new(http: reqwest::Client, url: &str) -> Client {
        Client {
            http,
            url: url.to_string(),
            cookie: Arc::new(Mutex::new(None)),
            content: Arc::new(Mutex::new(None)),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether a session cookie is held (it may have expired server-side).
    pub fn logged_in(&self) -> bool {
        self.cookie
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Sends one call and returns the method's `<…Response>` element.
    pub async fn invoke(&self, call: &Call) -> SoapResult<Node> {
        let context = call.method().to_string();
        let cookie = self
            .cookie
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut req = self
            .http
            .post(&self.url)
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", format!("urn:vim25/{API_VERSION}"))
            .body(call.envelope());
        if let Some(c) = cookie {
            req = req.header("Cookie", c);
        }
        let resp = req.send().await.map_err(|e| transport(&context, &e))?;
        let status = resp.status();
        let cookies: Vec<String> = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .map(|s| s.trim().to_string())
            .filter(|s| s.starts_with("vmware_soap_session="))
            .collect();
        let text = resp.text().await.map_err(|e| transport(&context, &e))?;
        if let Some(c) = cookies.into_iter().next() {
            *self.cookie.lock().unwrap_or_else(|e| e.into_inner()) = Some(c);
        }
        let doc = match Node::parse(&text) {
            Ok(doc) => doc,
            Err(_) if !status.is_success() => {
                return Err(SoapError::Http {
                    context,
                    status: status.as_u16(),
                })
            }
            Err(e) => {
                return Err(SoapError::protocol(
                    &context,
                    format!("unreadable answer: {e}"),
                ))
            }
        };
        let body = doc
            .child("Body")
            .ok_or_else(|| SoapError::protocol(&context, "no SOAP Body"))?;
        if let Some(fault) = body.child("Fault") {
            return Err(soap_fault(&context, fault));
        }
        if !status.is_success() {
            return Err(SoapError::Http {
                context,
                status: status.as_u16(),
            });
        }
        body.children
            .first()
            .cloned()
            .ok_or_else(|| SoapError::protocol(&context, "empty SOAP Body"))
    }

    /// `RetrieveServiceContent`, cached for the client's life.
    pub async fn service_content(&self) -> SoapResult<ServiceContent> {
        if let Some(c) = self
            .content
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(c);
        }
        let si = MoRef::new("ServiceInstance", "ServiceInstance");
        let resp = self
            .invoke(&Call::new("RetrieveServiceContent", &si))
            .await?;
        let rv = resp
            .child("returnval")
            .ok_or_else(|| SoapError::protocol("RetrieveServiceContent", "no returnval"))?;
        let r = |tag: &str| {
            rv.child(tag)
                .and_then(MoRef::from_node)
                .ok_or_else(|| SoapError::protocol("RetrieveServiceContent", format!("no {tag}")))
        };
        let content = ServiceContent {
            root_folder: r("rootFolder")?,
            property_collector: r("propertyCollector")?,
            search_index: r("searchIndex")?,
            session_manager: r("sessionManager")?,
            api_type: rv.text_at("about/apiType").unwrap_or_default().to_string(),
            api_version: rv
                .text_at("about/apiVersion")
                .unwrap_or_default()
                .to_string(),
        };
        *self.content.lock().unwrap_or_else(|e| e.into_inner()) = Some(content.clone());
        Ok(content)
    }

    /// `SessionManager.Login`; the session cookie is kept for later calls.
    pub async fn login(&self, username: &str, password: &str) -> SoapResult<()> {
        let sc = self.service_content().await?;
        // A stale cookie would make Login answer "already logged in" on
        // some servers; start clean.
        *self.cookie.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let call = Call::new("Login", &sc.session_manager)
            .text("userName", username)
            .text("password", password);
        self.invoke(&call).await?;
        if !self.logged_in() {
            return Err(SoapError::protocol(
                "Login",
                "no session cookie in the answer",
            ));
        }
        Ok(())
    }

    /// `SessionManager.Logout`; the cookie is dropped whatever the answer.
    pub async fn logout(&self) -> SoapResult<()> {
        if !self.logged_in() {
            return Ok(());
        }
        let sc = self.service_content().await?;
        let result = self.invoke(&Call::new("Logout", &sc.session_manager)).await;
        *self.cookie.lock().unwrap_or_else(|e| e.into_inner()) = None;
        result.map(|_| ())
    }

    /// `SearchIndex.FindByInventoryPath`: `None` when nothing is there.
    pub async fn find_by_inventory_path(&self, path: &str) -> SoapResult<Option<MoRef>> {
        let sc = self.service_content().await?;
        let resp = self
            .invoke(&Call::new("FindByInventoryPath", &sc.search_index).text("inventoryPath", path))
            .await?;
        Ok(resp.child("returnval").and_then(MoRef::from_node))
    }

    /// `SearchIndex.FindChild`: the direct child of `parent` named `name`.
    pub async fn find_child(&self, parent: &MoRef, name: &str) -> SoapResult<Option<MoRef>> {
        let sc = self.service_content().await?;
        let resp = self
            .invoke(
                &Call::new("FindChild", &sc.search_index)
                    .moref("entity", parent)
                    .text("name", name),
            )
            .await?;
        Ok(resp.child("returnval").and_then(MoRef::from_node))
    }

    /// Properties `paths` of one object.
    pub async fn properties(&self, obj: &MoRef, paths: &[&str]) -> SoapResult<ObjectProps> {
        let object_set = format!(
            "<objectSet>{}<skip>false</skip></objectSet>",
            obj.xml("obj")
        );
        let mut found = self.retrieve(&obj.kind, paths, &object_set).await?;
        match found.len() {
            1 => Ok(found.remove(0)),
            n => Err(SoapError::protocol(
                "RetrievePropertiesEx",
                format!("{n} objects for {obj}"),
            )),
        }
    }

    /// Properties `paths` of every object of type `kind` in `folder` and
    /// the folders below it.
    pub async fn properties_under(
        &self,
        folder: &MoRef,
        kind: &str,
        paths: &[&str],
    ) -> SoapResult<Vec<ObjectProps>> {
        let object_set = format!(
            "<objectSet>{}<skip>true</skip>\
             <selectSet xsi:type=\"TraversalSpec\"><name>folders</name><type>Folder</type>\
             <path>childEntity</path><skip>false</skip>\
             <selectSet><name>folders</name></selectSet></selectSet></objectSet>",
            folder.xml("obj")
        );
        self.retrieve(kind, paths, &object_set).await
    }

    /// `RetrievePropertiesEx`, then `ContinueRetrievePropertiesEx` while a
    /// token says more is waiting.
    async fn retrieve(
        &self,
        kind: &str,
        paths: &[&str],
        object_set: &str,
    ) -> SoapResult<Vec<ObjectProps>> {
        let sc = self.service_content().await?;
        let mut prop_set = format!("<propSet>{}", el("type", kind));
        for p in paths {
            prop_set.push_str(&el("pathSet", p));
        }
        prop_set.push_str("</propSet>");
        let call = Call::new("RetrievePropertiesEx", &sc.property_collector).raw(&format!(
            "<specSet>{prop_set}{object_set}</specSet><options/>"
        ));
        let mut resp = self.invoke(&call).await?;
        let mut out = Vec::new();
        while let Some(rv) = resp.child("returnval") {
            for o in rv.all("objects") {
                let obj = o.child("obj").and_then(MoRef::from_node).ok_or_else(|| {
                    SoapError::protocol("RetrievePropertiesEx", "an object without obj")
                })?;
                let props = o
                    .all("propSet")
                    .filter_map(|p| Some((p.text_at("name")?.to_string(), p.child("val")?.clone())))
                    .collect();
                out.push(ObjectProps { obj, props });
            }
            let Some(token) = rv.text_at("token").filter(|t| !t.is_empty()) else {
                break;
            };
            let token = token.to_string();
            resp = self
                .invoke(
                    &Call::new("ContinueRetrievePropertiesEx", &sc.property_collector)
                        .text("token", &token),
                )
                .await?;
        }
        Ok(out)
    }

    /// Calls a `…_Task` method and waits for its task: the task's result
    /// on success, its fault as [`SoapError::Fault`] on error.
    pub async fn run_task(&self, call: &Call, timeout: Duration) -> SoapResult<Option<Node>> {
        let resp = self.invoke(call).await?;
        let task = resp
            .child("returnval")
            .and_then(MoRef::from_node)
            .ok_or_else(|| SoapError::protocol(call.method(), "no task in the answer"))?;
        self.wait_task(call.method(), &task, timeout).await
    }

    /// Polls `info` of `task` until it succeeds or fails, backing off from
    /// 100 ms to 2 s between reads.
    pub async fn wait_task(
        &self,
        context: &str,
        task: &MoRef,
        timeout: Duration,
    ) -> SoapResult<Option<Node>> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            let props = self.properties(task, &["info"]).await?;
            let info = props.get("info").ok_or_else(|| {
                SoapError::protocol(context, format!("task {} has no info", task.value))
            })?;
            match info.text_at("state") {
                Some("success") => return Ok(info.child("result").cloned()),
                Some("error") => {
                    let err = info.child("error");
                    let kind = err
                        .and_then(|e| e.child("fault"))
                        .and_then(|f| f.xsi_type.clone())
                        .unwrap_or_else(|| "SystemError".to_string());
                    let message = err
                        .and_then(|e| e.text_at("localizedMessage"))
                        .unwrap_or_default()
                        .to_string();
                    return Err(SoapError::Fault {
                        context: context.to_string(),
                        kind,
                        message,
                    });
                }
                _ => {}
            }
            if started.elapsed() >= timeout {
                return Err(SoapError::TaskTimeout {
                    context: context.to_string(),
                    task: task.value.clone(),
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}

/// A SOAP `Fault` element as a [`SoapError::Fault`].
fn soap_fault(context: &str, fault: &Node) -> SoapError {
    let message = fault.text_at("faultstring").unwrap_or_default().to_string();
    let detail = fault.child("detail").and_then(|d| d.children.first());
    let kind = detail
        .and_then(|d| {
            d.xsi_type
                .clone()
                .or_else(|| Some(d.name.trim_end_matches("Fault").to_string()))
        })
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| {
            fault
                .text_at("faultcode")
                .unwrap_or("ServerFaultCode")
                .to_string()
        });
    SoapError::Fault {
        context: context.to_string(),
        kind,
        message,
    }
}

/// A reqwest error as a transport error, noting a refused certificate.
fn transport(context: &str, e: &reqwest::Error) -> SoapError {
    let mut message = e.to_string();
    let mut untrusted = false;
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message = format!("{message}: {s}");
        // rustls' verdict travels inside an io::Error, whose `source`
        // skips it: look through the io::Error too.
        let tls = s.downcast_ref::<rustls::Error>().or_else(|| {
            s.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        // When the layers between reqwest and rustls hide the typed error,
        // its text is all there is: rustls words a refused certificate
        // "invalid peer certificate: …".
        if matches!(
            tls,
            Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
        ) || s.to_string().starts_with("invalid peer certificate")
        {
            untrusted = true;
        }
        source = s.source();
    }
    SoapError::Transport {
        context: context.to_string(),
        message,
        untrusted,
        timeout: e.is_timeout(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_into_nodes_with_types_and_entities() {
        let xml = r#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="VirtualMachine">vm-7</obj><propSet><name>name</name><val xsi:type="xsd:string">a &amp; b &#x3c;c&#62;</val></propSet></objects></returnval></RetrievePropertiesExResponse></soapenv:Body></soapenv:Envelope>"#;
        let doc = Node::parse(xml).unwrap();
        let obj = doc
            .path("Body/RetrievePropertiesExResponse/returnval/objects")
            .unwrap();
        assert_eq!(
            MoRef::from_node(obj.child("obj").unwrap()),
            Some(MoRef::new("VirtualMachine", "vm-7"))
        );
        let val = obj.path("propSet/val").unwrap();
        assert_eq!(val.text, "a & b <c>");
        assert_eq!(val.xsi_type.as_deref(), Some("string"));
    }

    #[test]
    fn faults_name_their_type() {
        let xml = r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>Cannot complete login due to an incorrect user name or password.</faultstring><detail><InvalidLoginFault xmlns="urn:vim25" xsi:type="InvalidLogin"></InvalidLoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"#;
        let doc = Node::parse(xml).unwrap();
        let err = soap_fault("Login", doc.path("Body/Fault").unwrap());
        assert_eq!(err.fault_kind(), Some("InvalidLogin"));
        assert!(err.to_string().contains("incorrect user name"), "{err}");
    }

    #[test]
    fn requests_escape_values_and_round_trip_nodes() {
        let vm = MoRef::new("VirtualMachine", "vm-1");
        let call = Call::new("Rename_Task", &vm).text("newName", "a<b>&\"c\"");
        let env = call.envelope();
        assert!(
            env.contains("<newName>a&lt;b&gt;&amp;&quot;c&quot;</newName>"),
            "{env}"
        );
        let back = Node::parse(&env).unwrap();
        assert_eq!(back.text_at("Body/Rename_Task/newName"), Some("a<b>&\"c\""));
        let disk = Node::parse(
            r#"<device xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="VirtualDisk"><key>2000</key><backing xsi:type="VirtualDiskFlatVer2BackingInfo"><fileName>[ds] a/a.vmdk</fileName></backing></device>"#,
        )
        .unwrap();
        let xml = disk.to_xml("device");
        assert_eq!(
            xml,
            "<device xsi:type=\"VirtualDisk\"><key>2000</key><backing xsi:type=\"VirtualDiskFlatVer2BackingInfo\"><fileName>[ds] a/a.vmdk</fileName></backing></device>"
        );
        let built = Node::typed(
            "backing",
            "VirtualEthernetCardNetworkBackingInfo",
            vec![
                Node::leaf("deviceName", "VM <Network>"),
                MoRef::new("Network", "network-7").node("network"),
            ],
        );
        assert_eq!(
            built.to_xml("backing"),
            "<backing xsi:type=\"VirtualEthernetCardNetworkBackingInfo\"><deviceName>VM &lt;Network&gt;</deviceName><network type=\"Network\">network-7</network></backing>"
        );
    }
}
