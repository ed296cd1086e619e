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
    p.user("bob", false).await;
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

    // The site page: people, Unix groups; the server page shows who logs in.
    let site_page = format!("/sites/{site_id}");
    let (s, body, _) = br.get(&site_page).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _, h) = br
        .post(
            &format!("{site_page}/members"),
            &[("csrf", csrf.as_str()), ("user", "bob"), ("role", "ssh")],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h["location"].to_str().unwrap(), site_page);
    let (s, _, _) = br
        .post(
            &format!("{site_page}/unix-groups"),
            &[("csrf", csrf.as_str()), ("name", "devs")],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, body, _) = br.get(&site_page).await;
    let group_id = body
        .split(&format!("action=\"{site_page}/unix-groups/"))
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let (s, _, _) = br
        .post(
            &format!("{site_page}/unix-groups/{group_id}/members"),
            &[("csrf", csrf.as_str()), ("user", "bob")],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, body, _) = br.get(&site_page).await;
    assert!(body.contains("<td>devs</td><td>60000</td>"), "{body}");
    assert!(body.contains("<td>bob</td><td>ssh</td>"), "{body}");
    let (s, _, _) = br
        .post(
            &format!("{site_page}/lookup-groups"),
            &[("csrf", csrf.as_str()), ("group", "ops"), ("role", "admin")],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, body, _) = br.get(&site_page).await;
    assert!(body.contains("<td>ops</td><td>admin</td>"), "{body}");
    let (_, sites, _) = br.get("/sites").await;
    assert!(
        sites.contains(&format!("<a href=\"{site_page}\">")),
        "{sites}"
    );
    // Suspending is for platform admins.
    let (s, _, _) = br
        .post(&format!("{site_page}/suspend"), &[("csrf", csrf.as_str())])
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, page, _) = br.get(&location).await;
    assert!(
        page.contains("<tr data-login=\"alice\"><td>alice</td><td>at the next run</td><td class=\"login-role\">admin (sudo)</td><td>member</td>"),
        "{page}"
    );
    assert!(
        page.contains(
            "<td class=\"login-role\">SSH only</td><td>member</td><td>no key</td><td>devs</td>"
        ),
        "{page}"
    );
    assert!(page.contains("Last access run: none yet"), "{page}");

    // The job view's cancel button: the queued provision job is cancelled,
    // and the form can only send the browser back into the panel.
    let job_id = page
        .split("action=\"/jobs/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let (s, _, h) = br
        .post(
            &format!("/jobs/{job_id}/cancel"),
            &[("csrf", csrf.as_str()), ("back", "//evil.example/")],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h["location"].to_str().unwrap(), "/servers");
    let (_, page, _) = br.get(&location).await;
    assert!(
        page.contains("<td>provision</td><td class=\"job-state\">cancelled</td>"),
        "{page}"
    );

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
    // A platform admin suspends the site from its page: logins are blocked
    // on the server page; unsuspending lets people in again.
    let (_, body, _) = br.get(&site_page).await;
    let csrf = csrf_of(&body);
    let (s, _, h) = br
        .post(&format!("{site_page}/suspend"), &[("csrf", csrf.as_str())])
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h["location"].to_str().unwrap(), site_page);
    let (_, body, _) = br.get(&site_page).await;
    assert!(
        body.contains("<td id=\"site-state\">suspended</td>"),
        "{body}"
    );
    assert!(body.contains("id=\"unsuspend\""), "{body}");
    let (_, page, _) = br.get(&location).await;
    assert!(page.contains("id=\"access-blocked\""), "{page}");
    let (s, _, _) = br
        .post(
            &format!("{site_page}/unsuspend"),
            &[("csrf", csrf.as_str())],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, body, _) = br.get(&site_page).await;
    assert!(body.contains("<td id=\"site-state\">active</td>"), "{body}");
    let (_, page, _) = br.get(&location).await;
    assert!(!page.contains("id=\"access-blocked\""), "{page}");
    let (_, pools, _) = br.get("/admin/pools").await;
    assert!(
        pools.contains("<td>public-a</td><td>public</td><td>3</td><td>2</td><td>0</td><td>1</td>"),
        "{pools}"
    );
}
both_backends!(ui, pages);
