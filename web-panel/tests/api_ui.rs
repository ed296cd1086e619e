//! The HTML pages over real HTTP (no browser): login form, session cookie,
//! CSRF on forms, creating a site and a server through forms, the server
//! page with its queued job, escaping of user data, and the admin audit page.

mod api_support;

use api_support::{catalog_and_pool, start, Backend, Panel};
use reqwest::redirect::Policy;
use reqwest::StatusCode;

struct Browser<'a> {
    p: &'a Panel,
    http: reqwest::Client,
    cookie: Option<String>,
}

impl Browser<'_> {
    async fn get(&self, path: &str) -> (StatusCode, String, reqwest::header::HeaderMap) {
        let mut req = self.http.get(format!("{}{}", self.p.base, path));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let r = req.send().await.unwrap();
        let (s, h) = (r.status(), r.headers().clone());
        (s, r.text().await.unwrap(), h)
    }

    async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, String, reqwest::header::HeaderMap) {
        let mut req = self
            .http
            .post(format!("{}{}", self.p.base, path))
            .form(form);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let r = req.send().await.unwrap();
        let (s, h) = (r.status(), r.headers().clone());
        (s, r.text().await.unwrap(), h)
    }
}

/// The value of the first `name="csrf"` hidden field.
fn csrf_of(html: &str) -> String {
    let at =
        html.find("name=\"csrf\" value=\"").expect("a csrf field") + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_string()
}

async fn pages(b: Backend) {
    let p = start(b, |_| {}).await;
    catalog_and_pool(&p, 3).await;
    p.user("alice", false).await;
    p.user("root", true).await;
    let mut br = Browser {
        p: &p,
        http: reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap(),
        cookie: None,
    };
    let (s, _, h) = br.get("/servers").await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h["location"], "/login");

    let (s, body, _) = br
        .post("/login", &[("name", "alice"), ("password", "nope-nope")])
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(body.contains("invalid user name or password"));
    let (s, _, h) = br
        .post(
            "/login",
            &[("name", "alice"), ("password", "alice-password")],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    br.cookie = Some(
        h["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string(),
    );

    let (s, form, _) = br.get("/servers/new").await;
    assert_eq!(s, StatusCode::OK);
    assert!(form.contains("You administer no site yet"));
    let csrf = csrf_of(&form);
    let site = [
        ("name", "<script>alert(1)</script>"),
        ("owner_email", "a@example.org"),
        ("description", ""),
    ];
    let (s, _, _) = br
        .post("/sites", &[&site[..], &[("csrf", "forged")]].concat())
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = br
        .post("/sites", &[&site[..], &[("csrf", csrf.as_str())]].concat())
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);

    let (_, form, _) = br.get("/servers/new").await;
    let site_id = form
        .split("<option value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let key = form
        .split("name=\"idempotency_key\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let create = [
        ("csrf", csrf.as_str()),
        ("site_id", site_id.as_str()),
        ("server_type", "small"),
        ("kind", "production"),
        ("pool_type", "public"),
        ("idempotency_key", key.as_str()),
    ];
    let (s, _, h) = br.post("/servers", &create).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let location = h["location"].to_str().unwrap().to_string();
    // A double submit of the same form creates no second server.
    let (_, _, h2) = br.post("/servers", &create).await;
    assert_eq!(h2["location"].to_str().unwrap(), location);

    let (s, page, _) = br.get(&location).await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("mws-00001.example.org"));
    assert!(
        page.contains("<td id=\"status\" class=\"status-requested\">requested</td>"),
        "{page}"
    );
    assert!(
        page.contains("<td>provision</td><td class=\"job-state\">queued</td>"),
        "{page}"
    );
    // Power buttons only show on a ready server; the form needs the CSRF
    // token, and the domain layer refuses a server that is not ready.
    assert!(!page.contains("id=\"power\""), "{page}");
    let power = format!("{location}/power");
    let (s, _, _) = br
        .post(&power, &[("csrf", "forged"), ("action", "start")])
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, body, _) = br
        .post(&power, &[("csrf", csrf.as_str()), ("action", "start")])
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("power actions need a ready server"), "{body}");

    let (_, list, _) = br.get("/servers").await;
    assert!(
        list.contains("&lt;script&gt;alert(1)&lt;"),
        "site names are escaped: {list}"
    );
    assert!(!list.contains("<script>alert(1)"));

    // Not an admin: the admin pages are refused.
    let (s, _, _) = br.get("/admin/audit").await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Logout needs the token too, then the cookie is dead.
    let (s, _, _) = br.post("/logout", &[("csrf", csrf.as_str())]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (s, _, _) = br.get("/servers").await;
    assert_eq!(s, StatusCode::SEE_OTHER);

    let (_, _, h) = br
        .post("/login", &[("name", "root"), ("password", "root-password")])
        .await;
    br.cookie = Some(
        h["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string(),
    );
    let (s, audit, _) = br.get("/admin/audit").await;
    assert_eq!(s, StatusCode::OK);
    assert!(audit.contains("<td class=\"action\">service.create</td>"));
    for page in ["/admin/services", "/admin/jobs", "/admin/pools", "/keys"] {
        let (s, body, _) = br.get(page).await;
        assert_eq!(s, StatusCode::OK, "{page}: {body}");
    }
    let (_, pools, _) = br.get("/admin/pools").await;
    assert!(
        pools.contains("<td>public-a</td><td>public</td><td>3</td><td>2</td><td>0</td><td>1</td>"),
        "{pools}"
    );
}
both_backends!(ui, pages);
