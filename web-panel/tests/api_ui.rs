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
    assert_eq!(h["location"], "/login?next=%2Fservers");

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
    // A name that is not a name is refused beside its field, with what
    // was typed kept (escaped).
    let bad = [
        ("name", "<script>alert(1)</script>"),
        ("owner_email", "a@example.org"),
        ("description", "kept"),
        ("csrf", csrf.as_str()),
    ];
    let (s, body, _) = br.post("/sites", &bad).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.contains("id=\"error-name\" role=\"alert\">&#x27;&lt;&#x27; is not allowed in a name"),
        "{body}"
    );
    assert!(
        body.contains("value=\"&lt;script&gt;alert(1)&lt;&#x2f;script&gt;\""),
        "{body}"
    );
    assert!(body.contains("value=\"kept\""), "{body}");
    assert!(!body.contains("<script>alert(1)"));
    assert!(
        body.contains("id=\"logout\""),
        "the form keeps the navigation"
    );
    let site = [
        ("name", "alice-site"),
        ("owner_email", "a@example.org"),
        ("description", "<script>alert(1)</script>"),
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
        page.contains("<span class=\"badge status-requested\" id=\"status\">requested</span>"),
        "{page}"
    );
    assert!(
        page.contains(
            ">provision</a></td><td><span class=\"badge status-queued job-state\">queued</span>"
        ),
        "{page}"
    );
    // Power buttons only show on a ready server; the form needs the CSRF
    // token, and the domain layer refuses a server that is not ready.
    assert!(page.contains("data-action=\"start\" hidden>"), "{page}");
    assert!(
        page.contains("data-action=\"power_off\" data-confirm="),
        "{page}"
    );
    // The connection line waits for a ready server.
    assert!(page.contains("id=\"connection\" hidden"), "{page}");
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
    // Taking bob out of the group asks first, then does it; he goes back
    // in for what follows.
    let remove = format!("{site_page}/unix-groups/{group_id}/members/remove");
    assert!(
        body.contains("aria-label=\"Take bob out of devs\""),
        "{body}"
    );
    let (s, page, _) = br
        .post(&remove, &[("csrf", csrf.as_str()), ("user", "bob")])
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        page.contains("Take this person out of the Unix group?")
            && page.contains("name=\"user\" value=\"bob\""),
        "{page}"
    );
    let (_, body, _) = br.get(&site_page).await;
    assert!(
        body.contains("aria-label=\"Take bob out of devs\""),
        "{body}"
    );
    let (s, _, _) = br
        .post(
            &remove,
            &[
                ("csrf", csrf.as_str()),
                ("user", "bob"),
                ("confirmed", "yes"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, body, _) = br.get(&site_page).await;
    assert!(!body.contains("Take bob out of devs"), "{body}");
    let (s, _, _) = br
        .post(
            &remove,
            &[
                ("csrf", csrf.as_str()),
                ("user", "nobody-here"),
                ("confirmed", "yes"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = br
        .post(
            &format!("{site_page}/unix-groups/{group_id}/members"),
            &[("csrf", csrf.as_str()), ("user", "bob")],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
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
    // Suspending is for platform admins (confirmed or not).
    let (s, _, _) = br
        .post(
            &format!("{site_page}/suspend"),
            &[("csrf", csrf.as_str()), ("confirmed", "yes")],
        )
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
        page.contains(">provision</a></td><td><span class=\"badge status-cancelled job-state\">cancelled</span>"),
        "{page}"
    );

    let (_, body, _) = br.get(&site_page).await;
    assert!(
        body.contains("&lt;script&gt;alert(1)&lt;"),
        "descriptions are escaped: {body}"
    );
    assert!(!body.contains("<script>alert(1)"));
    let (_, list, _) = br.get("/servers").await;
    assert!(list.contains(">alice-site</a>"), "{list}");
    assert!(!list.contains("None"), "{list}");

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
    // Without the script's `confirmed=yes`, a confirmation page first
    // (kit::ask_first), posting the same form again, confirmed; the site
    // is not suspended yet.
    let (s, body, _) = br
        .post(
            &format!("{site_page}/suspend"),
            &[("csrf", csrf.as_str()), ("note", "kept")],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let unescaped = body.replace("&#x2f;", "/");
    assert!(
        unescaped.contains("<h1>Suspend this site?</h1>")
            && unescaped.contains(&format!("action=\"{site_page}/suspend\""))
            && unescaped.contains("name=\"confirmed\" value=\"yes\"")
            && unescaped.contains("name=\"note\" value=\"kept\""),
        "{body}"
    );
    let (_, body, _) = br.get(&site_page).await;
    assert!(body.contains("<td id=\"site-state\">active</td>"), "{body}");
    let (s, _, h) = br
        .post(
            &format!("{site_page}/suspend"),
            &[("csrf", csrf.as_str()), ("confirmed", "yes")],
        )
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
        pools.contains(">public-a</a></td><td><a href=\"&#x2f;admin&#x2f;pools&#x2f;1\">public</a></td><td class=\"num\">3</td><td class=\"num\">2</td><td class=\"num\">0</td><td class=\"num\">1</td>"),
        "{pools}"
    );
}
both_backends!(ui, pages);

/// Logs `name` in through the form; the session cookie goes on `br`.
async fn log_in(br: &mut Browser<'_>, name: &str) {
    br.cookie = None;
    let password = format!("{name}-password");
    let (s, _, h) = br
        .post("/login", &[("name", name), ("password", password.as_str())])
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{name} logs in");
    br.cookie = Some(
        h["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string(),
    );
}

/// The playbook-run pages without a browser: every page answers, forms
/// need the CSRF token, secrets are never shown back (not even on a form
/// returned with an error), field errors come back next to their fields
/// with what was typed, and the same authorisation as the API: platform
/// admins manage, a template's group members see and launch it and its
/// runs, others learn nothing (404).
async fn automation_pages(b: Backend) {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_path_buf();
    let p = start(b, move |c| c.data_dir = data_dir).await;
    let (_, root_token) = p.user("root", true).await;
    let (alice, _) = p.user("alice", false).await;
    p.user("bob", false).await;
    let root = keel_panel::domain::Principal::system();
    let ops = keel_panel::services::groups::create(p.db(), &root, "ops")
        .await
        .unwrap();
    keel_panel::services::groups::add_member(p.db(), &root, ops.id, &alice.name)
        .await
        .unwrap();
    let mut br = Browser {
        p: &p,
        http: reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap(),
        cookie: None,
    };
    log_in(&mut br, "root").await;
    for page in [
        "/projects",
        "/credentials",
        "/inventories",
        "/notifications",
        "/templates",
        "/templates/new",
        "/runs",
        "/schedules",
    ] {
        let (s, body, _) = br.get(page).await;
        assert_eq!(s, StatusCode::OK, "{page}: {body}");
    }
    let (_, body, _) = br.get("/credentials").await;
    let csrf = csrf_of(&body);

    // Credentials: no token, no credential; the secret is never shown.
    let secret = "pw-SECRET-7f3a";
    let cred = [
        ("name", "deploy become"),
        ("kind", "become_password"),
        ("secret", secret),
    ];
    let (s, _, _) = br
        .post("/credentials", &[&cred[..], &[("csrf", "forged")]].concat())
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, body, _) = br.get("/credentials").await;
    assert!(!body.contains("deploy become"), "{body}");
    let (s, _, h) = br
        .post(
            "/credentials",
            &[&cred[..], &[("csrf", csrf.as_str())]].concat(),
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h["location"], "/credentials");
    let (_, body, _) = br.get("/credentials").await;
    assert!(
        body.contains("<td>deploy become</td><td>become_password</td>"),
        "{body}"
    );
    assert!(!body.contains(secret));
    // A public key where a private one belongs: the form comes back with
    // the name kept and the error, never the pasted text.
    let pasted =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN2R/PexT3/dDHyyYCLKHUSG/G4PBPN+czZHFBRrcxOH x";
    let (s, body, _) = br
        .post(
            "/credentials",
            &[
                ("csrf", csrf.as_str()),
                ("name", "wrong key"),
                ("kind", "ssh_key"),
                ("secret", pasted),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("not a private key"), "{body}");
    assert!(body.contains("value=\"wrong key\""), "{body}");
    assert!(!body.contains("AAAAC3NzaC1lZDI1NTE5"), "{body}");

    // Projects: a directory (synced: still there), a git URL refused.
    let project_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        project_dir.path().join("site.yml"),
        "- hosts: all\n  tasks: []\n",
    )
    .unwrap();
    let dir = project_dir.path().display().to_string();
    let (s, _, _) = br
        .post(
            "/projects",
            &[
                ("csrf", csrf.as_str()),
                ("name", "ops"),
                ("kind", "directory"),
                ("path", dir.as_str()),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (s, body, _) = br
        .post(
            "/projects",
            &[
                ("csrf", csrf.as_str()),
                ("name", "evil"),
                ("kind", "git"),
                ("git_url", "--upload-pack=touch /tmp/x"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("git_url: a git URL"), "{body}");
    let project = keel_panel::automation::catalog::list_projects(p.db(), &root)
        .await
        .unwrap();
    assert_eq!(project.len(), 1);
    let project = project[0].id;
    let (s, _, _) = br
        .post(
            &format!("/projects/{project}/sync"),
            &[("csrf", csrf.as_str())],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);

    // A git URL's password is never shown: not on the page, not by the
    // API or the audit log, not in what git says when the fetch fails.
    let (s, _, _) = br
        .post(
            "/projects",
            &[
                ("csrf", csrf.as_str()),
                ("name", "private"),
                ("kind", "git"),
                ("git_url", "http://deploy:s3cret-pw@127.0.0.1:9/repo.git"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, body, _) = br.get("/projects").await;
    assert!(body.contains("deploy:***@127.0.0.1:9"), "{body}");
    let private = keel_panel::automation::catalog::list_projects(p.db(), &root)
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.name == "private")
        .unwrap()
        .id;
    let (s, body, _) = br
        .post(
            &format!("/projects/{private}/sync"),
            &[("csrf", csrf.as_str())],
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("git fetch failed"), "{body}");
    let bearer = api_support::Cred::Bearer(root_token);
    let mut said = body;
    for path in ["/api/v1/projects", "/api/v1/admin/audit?limit=500"] {
        said.push_str(&p.call("GET", path, &bearer, None).await.json.to_string());
    }
    assert!(said.contains("deploy:***@"), "{said}");
    assert!(!said.contains("s3cret-pw"), "{said}");
    // Saving the project back with the URL as shown keeps the real one.
    let r = p
        .call(
            "PUT",
            &format!("/api/v1/projects/{private}"),
            &bearer,
            Some(serde_json::json!({"name": "private", "kind": "git",
                                    "git_url": "http://deploy:***@127.0.0.1:9/repo.git"})),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.json);
    let mut rc = p.db().read().await.unwrap();
    let saved: Option<String> = keel_panel::scalar!(
        &mut rc.conn(),
        String,
        "SELECT git_url FROM projects WHERE name = 'private'"
    )
    .unwrap();
    drop(rc);
    assert_eq!(
        saved.as_deref(),
        Some("http://deploy:s3cret-pw@127.0.0.1:9/repo.git")
    );

    // An inventory of the panel's servers; a webhook whose key stays hidden.
    let (s, _, _) = br
        .post(
            "/inventories",
            &[
                ("csrf", csrf.as_str()),
                ("name", "all"),
                ("kind", "panel"),
                ("filter_site", "main"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (s, _, _) = br
        .post(
            "/notifications",
            &[
                ("csrf", csrf.as_str()),
                ("name", "hook"),
                ("kind", "webhook"),
                ("address", "http://127.0.0.1:9/hook"),
                ("secret", "hook-SECRET-91"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, body, _) = br.get("/notifications").await;
    assert!(
        body.contains("127.0.0.1:9") && !body.contains("hook-SECRET-91"),
        "{body}"
    );
    let inventory = keel_panel::automation::catalog::list_inventories(p.db(), &root)
        .await
        .unwrap()[0]
        .id;
    let target = keel_panel::automation::catalog::list_targets(p.db(), &root)
        .await
        .unwrap()[0]
        .id;

    // A template with a survey, launchable by the group ops.
    let (project_s, inventory_s, group_s) = (
        project.to_string(),
        inventory.to_string(),
        ops.id.to_string(),
    );
    let notify = format!("{target}:failure");
    let (s, body, h) = br
        .post(
            "/templates",
            &[
                ("csrf", csrf.as_str()),
                ("name", "deploy"),
                ("project_id", project_s.as_str()),
                ("playbook", "site.yml"),
                ("inventory_id", inventory_s.as_str()),
                ("forks", "5"),
                ("verbosity", "0"),
                ("enabled", "1"),
                ("groups", group_s.as_str()),
                ("notify", notify.as_str()),
                ("q0_variable", "n"),
                ("q0_type", "integer"),
                ("q0_required", "1"),
                ("q0_max", "5"),
                ("q1_variable", ""),
                ("q1_type", "text"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{body}");
    let tpl_page = h["location"].to_str().unwrap().to_string();
    let tpl_id: i64 = tpl_page.rsplit('/').next().unwrap().parse().unwrap();
    let (_, body, _) = br.get(&format!("{tpl_page}/edit")).await;
    assert!(body.contains("id=\"q0_variable\" value=\"n\""), "{body}");
    assert!(
        body.contains(&format!("value=\"{notify}\" checked")),
        "{body}"
    );
    // A survey question with a bad name comes back on the form.
    let (s, body, _) = br
        .post(
            &tpl_page,
            &[
                ("csrf", csrf.as_str()),
                ("name", "deploy"),
                ("project_id", project_s.as_str()),
                ("playbook", "site.yml"),
                ("inventory_id", inventory_s.as_str()),
                ("forks", "5"),
                ("verbosity", "0"),
                ("q0_variable", "1bad"),
                ("q0_type", "text"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("survey[0].variable"), "{body}");
    assert!(body.contains("value=\"1bad\""), "{body}");

    // Launch: a bad answer is a field error beside the field, the typed
    // value kept, and no run; a good one goes to the run page.
    let launch = format!("{tpl_page}/launch");
    let (s, body, _) = br
        .post(&launch, &[("csrf", csrf.as_str()), ("survey.n", "9")])
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body.contains("id=\"error-n\" role=\"alert\">the value must be at most 5"),
        "{body}"
    );
    assert!(body.contains("value=\"9\""), "{body}");
    let (s, _, _) = br
        .post(&launch, &[("csrf", "forged"), ("survey.n", "2")])
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, body, _) = br.get("/runs").await;
    assert!(body.contains("No run."), "{body}");
    let (s, _, h) = br
        .post(&launch, &[("csrf", csrf.as_str()), ("survey.n", "2")])
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let run_page = h["location"].to_str().unwrap().to_string();
    assert!(run_page.starts_with("/runs/"), "{run_page}");
    let (_, body, _) = br.get(&run_page).await;
    assert!(
        body.contains("<span class=\"badge status-queued\" id=\"status\">queued</span>"),
        "{body}"
    );
    assert!(body.contains("data-events=\"/api/v1/runs/"), "{body}");

    // Schedules: a bad cron is a field error; a good one lists its next
    // fires until it is disabled.
    let tpl_s = tpl_id.to_string();
    let (s, body, _) = br
        .post(
            "/schedules",
            &[
                ("csrf", csrf.as_str()),
                ("template_id", tpl_s.as_str()),
                ("name", "nightly"),
                ("cron", "61 * * * *"),
                ("time_zone", "Europe/Paris"),
                ("missed", "skip"),
                ("enabled", "1"),
                ("extra_vars", "n: 1"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("id=\"error-cron\""), "{body}");
    assert!(body.contains("value=\"61 * * * *\""), "{body}");
    let (s, _, _) = br
        .post(
            "/schedules",
            &[
                ("csrf", csrf.as_str()),
                ("template_id", tpl_s.as_str()),
                ("name", "nightly"),
                ("cron", "0 3 * * *"),
                ("time_zone", "Europe/Paris"),
                ("missed", "skip"),
                ("enabled", "1"),
                ("extra_vars", "n: 1"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, body, _) = br.get("/schedules").await;
    // 03:00 in Paris is 01:00 or 02:00 UTC.
    assert!(body.contains(":00:00 UTC<br>"), "{body}");
    assert!(body.contains("<td class=\"state\">enabled</td>"), "{body}");
    let schedule = keel_panel::automation::schedules::list(p.db(), &root)
        .await
        .unwrap()[0]
        .schedule
        .id;
    let (s, _, _) = br
        .post(
            &format!("/schedules/{schedule}/disable"),
            &[("csrf", csrf.as_str())],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, body, _) = br.get("/schedules").await;
    assert!(
        body.contains("<td class=\"state\">disabled</td>")
            && body.contains("<td class=\"next\">none</td>"),
        "{body}"
    );

    // Editing: `?edit=ID` fills the page's form with the object and posts
    // it to the object; a refusal keeps the form on that object.
    let (_, body, _) = br.get(&format!("/schedules?edit={schedule}")).await;
    let unescaped = body.replace("&#x2f;", "/");
    assert!(
        unescaped.contains(&format!("action=\"/schedules/{schedule}\""))
            && body.contains("value=\"0 3 * * *\"")
            && body.contains("Edit the schedule nightly"),
        "{body}"
    );
    let edit = [
        ("csrf", csrf.as_str()),
        ("template_id", tpl_s.as_str()),
        ("name", "nightly"),
        ("time_zone", "Europe/Paris"),
        ("missed", "skip"),
        ("enabled", "1"),
        ("extra_vars", "n: 1"),
    ];
    let (s, body, _) = br
        .post(
            &format!("/schedules/{schedule}"),
            &[&edit[..], &[("cron", "0 99 * * *")]].concat(),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body.replace("&#x2f;", "/")
            .contains(&format!("action=\"/schedules/{schedule}\""))
            && body.contains("id=\"error-cron\""),
        "{body}"
    );
    let (s, _, _) = br
        .post(
            &format!("/schedules/{schedule}"),
            &[&edit[..], &[("cron", "30 4 * * *")]].concat(),
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, body, _) = br.get("/schedules").await;
    assert!(
        body.contains("<code>30 4 * * *</code>")
            && body.contains("<td class=\"state\">enabled</td>"),
        "{body}"
    );
    // A git project's form shows the URL's password masked; saved back as
    // shown, the real one stays.
    let (_, body, _) = br.get(&format!("/projects?edit={private}")).await;
    assert!(body.contains("deploy:***@127.0.0.1:9"), "{body}");
    assert!(!body.contains("s3cret-pw"), "{body}");
    let (s, _, _) = br
        .post(
            &format!("/projects/{private}"),
            &[
                ("csrf", csrf.as_str()),
                ("name", "private renamed"),
                ("kind", "git"),
                ("git_url", "http://deploy:***@127.0.0.1:9/repo.git"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let mut rc = p.db().read().await.unwrap();
    let saved: Option<String> = keel_panel::scalar!(
        &mut rc.conn(),
        String,
        "SELECT git_url FROM projects WHERE name = 'private renamed'"
    )
    .unwrap();
    drop(rc);
    assert_eq!(
        saved.as_deref(),
        Some("http://deploy:s3cret-pw@127.0.0.1:9/repo.git")
    );
    let (s, _, _) = br.get("/projects?edit=987654").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A credential gets a new secret on its page's form, keeping its kind;
    // the form never holds the old one.
    let cred_id = keel_panel::automation::catalog::list_credentials(p.db(), &root)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name == "deploy become")
        .unwrap()
        .id;
    let sealed = || async {
        let mut rc = p.db().read().await.unwrap();
        keel_panel::scalar!(
            &mut rc.conn(),
            String,
            "SELECT sealed FROM credentials WHERE id = $1",
            cred_id
        )
        .unwrap()
        .unwrap()
    };
    let before = sealed().await;
    let (_, body, _) = br.get(&format!("/credentials?edit={cred_id}")).await;
    assert!(
        body.replace("&#x2f;", "/")
            .contains(&format!("action=\"/credentials/{cred_id}\""))
            && body.contains("value=\"deploy become\"")
            && !body.contains(secret),
        "{body}"
    );
    let (s, body, _) = br
        .post(
            &format!("/credentials/{cred_id}"),
            &[
                ("csrf", csrf.as_str()),
                ("name", "deploy become"),
                ("kind", "vault_password"),
                ("secret", "new-SECRET-1"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body.contains("keeps its kind") && !body.contains("new-SECRET-1"),
        "{body}"
    );
    assert_eq!(sealed().await, before, "nothing changed");
    let (s, _, _) = br
        .post(
            &format!("/credentials/{cred_id}"),
            &[
                ("csrf", csrf.as_str()),
                ("name", "deploy become"),
                ("kind", "become_password"),
                ("secret", "new-SECRET-1"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_ne!(sealed().await, before, "the secret was replaced");
    let (_, body, _) = br.get("/credentials").await;
    assert!(!body.contains("new-SECRET-1"), "{body}");

    // Deletes ask first: without `confirmed=yes` (what the script's dialog
    // adds) the answer is a confirmation page and nothing is deleted; the
    // page's button posts it again, confirmed.
    let credential = keel_panel::automation::catalog::list_credentials(p.db(), &root)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name == "deploy become")
        .unwrap()
        .id;
    for (what, list, path) in [
        (
            "schedule",
            "/schedules",
            format!("/schedules/{schedule}/delete"),
        ),
        (
            "credential",
            "/credentials",
            format!("/credentials/{credential}/delete"),
        ),
    ] {
        let (s, body, _) = br.post(&path, &[("csrf", csrf.as_str())]).await;
        assert_eq!(s, StatusCode::OK, "{path}: {body}");
        // minijinja escapes '/' in attributes as `&#x2f;`.
        let body = body.replace("&#x2f;", "/");
        assert!(
            body.contains(&format!("Delete the {what} "))
                && body.contains(&format!("action=\"{path}\""))
                && body.contains("name=\"confirmed\" value=\"yes\""),
            "{body}"
        );
        let (_, body, _) = br.get(list).await;
        assert!(
            body.contains(&format!("action=\"{path}\"")),
            "{what} still there: {body}"
        );
        let (s, _, h) = br
            .post(&path, &[("csrf", csrf.as_str()), ("confirmed", "yes")])
            .await;
        assert_eq!(s, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(h["location"], list);
        let (_, body, _) = br.get(list).await;
        assert!(
            !body.contains(&format!("action=\"{path}\"")),
            "{what} deleted: {body}"
        );
    }
    // One the caller cannot see is the domain layer's 404, asked or not.
    let (s, _, _) = br
        .post("/projects/987654/delete", &[("csrf", csrf.as_str())])
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // alice (group ops) sees and may launch the template and its runs, but
    // not the admin pages; bob learns nothing.
    log_in(&mut br, "alice").await;
    let (_, body, _) = br.get("/templates").await;
    assert!(body.contains(">deploy</a>"), "{body}");
    for page in [
        "/projects",
        "/credentials",
        "/inventories",
        "/schedules",
        "/notifications",
        "/templates/new",
    ] {
        let (s, _, _) = br.get(page).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{page}");
    }
    let (s, _, _) = br.get(&run_page).await;
    assert_eq!(s, StatusCode::OK);
    let (_, body, _) = br.get(&run_page).await;
    let alice_csrf = csrf_of(&body);
    let (s, _, h) = br
        .post(
            &format!("{run_page}/cancel"),
            &[("csrf", alice_csrf.as_str())],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h["location"].to_str().unwrap(), run_page);
    let (_, body, _) = br.get(&run_page).await;
    assert!(
        body.contains("<span class=\"badge status-cancelled\" id=\"status\">cancelled</span>"),
        "{body}"
    );
    assert!(
        !body.contains("data-events="),
        "a finished run is not followed"
    );
    log_in(&mut br, "bob").await;
    for page in [tpl_page.as_str(), run_page.as_str()] {
        let (s, _, _) = br.get(page).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{page}");
    }
    let (_, body, _) = br.get("/templates").await;
    assert!(!body.contains("deploy"), "{body}");
}
both_backends!(automation_ui, automation_pages);

/// Error pages and refusals (issue #19): an unknown path is a real 404
/// page, refusals keep the navigation of the signed-in user, a form's
/// target opened as a link says so, names and keys are checked in the
/// domain layer (so the API refuses the same), and a deleted server's
/// page shows neither "None" nor its old host keys.
async fn errors_and_validation(b: Backend) {
    let p = start(b, |_| {}).await;
    catalog_and_pool(&p, 3).await;
    let (_, token) = p.user("alice", false).await;
    let alice = api_support::Cred::Bearer(token);
    let mut br = Browser {
        p: &p,
        http: reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap(),
        cookie: None,
    };
    // Anonymous: the 404 page offers the login, under /api/ it is JSON.
    let (s, body, _) = br.get("/no/such/page").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(
        body.contains("<h1 id=\"error-title\">Not found</h1>"),
        "{body}"
    );
    assert!(body.contains("href=\"/login\""), "{body}");
    let (s, body, _) = br.get("/api/v1/no/such/route").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(body.contains("\"error\":\"not_found\""), "{body}");

    log_in(&mut br, "alice").await;
    let (s, body, _) = br.get("/no/such/page").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(
        body.contains("id=\"logout\""),
        "signed in on the 404 page: {body}"
    );
    assert!(body.contains("alice"), "{body}");
    let (s, body, _) = br.get("/servers/424242").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(
        body.contains("server not found") && body.contains("id=\"logout\""),
        "{body}"
    );
    let (s, body, _) = br.get("/admin/users").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        body.contains("<h1 id=\"error-title\">Not allowed</h1>") && body.contains("id=\"logout\""),
        "{body}"
    );
    let (s, body, _) = br.get("/servers/1/delete").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert!(body.contains("id=\"logout\""), "{body}");
    // The stylesheet and the script come from the panel itself.
    let (s, css, h) = br.get("/static/keel.css").await;
    assert_eq!(s, StatusCode::OK);
    assert!(h["content-type"].to_str().unwrap().starts_with("text/css"));
    assert!(css.contains(".badge"));
    let (_, page, _) = br.get("/").await;
    assert!(page.contains("href=\"/static/keel.css\""), "{page}");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "nothing from elsewhere: {page}"
    );
    assert!(page.contains("id=\"first-server\""), "{page}");

    // Keys: a 100,000-character name and a junk key are refused, by the
    // API and the form alike, naming the field.
    let key =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN2R/PexT3/dDHyyYCLKHUSG/G4PBPN+czZHFBRrcxOH a@b";
    let long = "k".repeat(100_000);
    let r = p
        .call(
            "POST",
            "/api/v1/me/ssh-keys",
            &alice,
            Some(serde_json::json!({"name": long, "public_key": key})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.json);
    assert_eq!(r.json["field"], "name");
    assert!(r.json["message"]
        .as_str()
        .unwrap()
        .contains("at most 100 characters"));
    let r = p
        .call(
            "POST",
            "/api/v1/me/ssh-keys",
            &alice,
            Some(serde_json::json!({"name": "x", "public_key": "ssh-ed25519 AAAA"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.json);
    assert_eq!(r.json["field"], "public_key");
    let message = r.json["message"].as_str().unwrap();
    assert!(
        message.starts_with("not an OpenSSH public key: expected a type such as ssh-ed25519 followed by base64 data"),
        "{message}"
    );
    let (_, body, _) = br.get("/keys").await;
    let csrf = csrf_of(&body);
    let (s, body, _) = br
        .post(
            "/keys",
            &[
                ("csrf", csrf.as_str()),
                ("name", "laptop"),
                ("public_key", "hello"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("id=\"error-public_key\""), "{body}");
    assert!(
        body.contains(">hello</textarea>"),
        "the key typed is kept: {body}"
    );
    assert!(body.contains("value=\"laptop\""), "{body}");
    // Site names: the API refuses what the form refuses.
    let r = p
        .call(
            "POST",
            "/api/v1/sites",
            &alice,
            Some(serde_json::json!({"name": "x".repeat(64), "owner_email": "a@example.org"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.json);
    assert_eq!(r.json["field"], "name");

    // A deleted server: no "None", no buttons. (That its host keys go is
    // `browser_ui.rs`'s, on a real server that had some.)
    let r = p
        .call(
            "POST",
            "/api/v1/sites",
            &alice,
            Some(serde_json::json!({"name": "alice-site", "owner_email": "a@example.org"})),
        )
        .await;
    let site = r.json["id"].as_i64().unwrap();
    let r = p
        .call(
            "POST",
            "/api/v1/services",
            &alice,
            Some(serde_json::json!({"site_id": site, "server_type": "small"})),
        )
        .await;
    let id = r.json["service"]["id"].as_i64().unwrap();
    // A cancelled flow step is retried from the server's page, not on
    // its own; a cancelled access run runs again as a new job.
    let provision_job = r.json["job_id"].as_i64().unwrap();
    let r2 = p
        .call(
            "POST",
            &format!("/api/v1/jobs/{provision_job}/retry"),
            &alice,
            None,
        )
        .await;
    assert_eq!(r2.status, StatusCode::CONFLICT, "{}", r2.json);
    assert!(r2.json["message"]
        .as_str()
        .unwrap()
        .contains("only a dead or cancelled job"));
    let r2 = p
        .call(
            "POST",
            &format!("/api/v1/jobs/{provision_job}/cancel"),
            &alice,
            None,
        )
        .await;
    assert_eq!(r2.status, StatusCode::OK, "{}", r2.json);
    let r2 = p
        .call(
            "POST",
            &format!("/api/v1/jobs/{provision_job}/retry"),
            &alice,
            None,
        )
        .await;
    assert_eq!(r2.status, StatusCode::CONFLICT, "{}", r2.json);
    assert!(r2.json["message"]
        .as_str()
        .unwrap()
        .contains("use Retry on the server's page"));
    {
        use keel_panel::lifecycle::Status;
        let mut tx = p.db().begin().await.unwrap();
        let mut conn = keel_panel::db::tx_conn(&mut tx);
        assert!(keel_panel::lifecycle::transition::transition(
            &mut conn,
            p.db().now(),
            &keel_panel::domain::Principal::system(),
            id,
            &[Status::Requested],
            Status::Ready,
            None,
        )
        .await
        .unwrap());
        tx.commit().await.unwrap();
    }
    let r2 = p
        .call(
            "POST",
            &format!("/api/v1/services/{id}/access"),
            &alice,
            None,
        )
        .await;
    assert_eq!(r2.status, StatusCode::ACCEPTED, "{}", r2.json);
    let access_job = r2.json["job_id"].as_i64().unwrap();
    p.call(
        "POST",
        &format!("/api/v1/jobs/{access_job}/cancel"),
        &alice,
        None,
    )
    .await;
    let (_, body, _) = br.get(&format!("/jobs/{access_job}")).await;
    assert!(body.contains("id=\"retry-job\""), "{body}");
    let (s, _, h) = br
        .post(
            &format!("/jobs/{access_job}/retry"),
            &[("csrf", csrf.as_str())],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let new_page = h["location"].to_str().unwrap().to_string();
    assert_ne!(new_page, format!("/jobs/{access_job}"));
    let (s, body, _) = br.get(&new_page).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        body.contains("Job ") && body.contains(": access</h1>"),
        "{body}"
    );
    assert!(body.contains("id=\"job-state\">queued</span>"), "{body}");
    // Another user's job: refused.
    let (_, bob) = p.user("bob", false).await;
    let r2 = p
        .call(
            "POST",
            &format!("/api/v1/jobs/{access_job}/retry"),
            &api_support::Cred::Bearer(bob),
            None,
        )
        .await;
    assert_eq!(r2.status, StatusCode::FORBIDDEN, "{}", r2.json);

    // Deleting needs the hostname typed.
    let hostname = r.json["service"]["hostname"].as_str().unwrap().to_string();
    let (s, body, _) = br
        .post(
            &format!("/servers/{id}/delete"),
            &[("csrf", csrf.as_str()), ("confirm", "nope")],
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("That is not the server's name."), "{body}");
    {
        use keel_panel::lifecycle::Status;
        let mut tx = p.db().begin().await.unwrap();
        let mut conn = keel_panel::db::tx_conn(&mut tx);
        assert!(keel_panel::lifecycle::transition::transition(
            &mut conn,
            p.db().now(),
            &keel_panel::domain::Principal::system(),
            id,
            &[Status::Ready],
            Status::Deleted,
            None,
        )
        .await
        .unwrap());
        tx.commit().await.unwrap();
    }
    let (_, page, _) = br.get(&format!("/servers/{id}")).await;
    assert!(!page.contains("None") && !page.contains(">none<"), "{page}");
    assert!(page.contains("The server is deleted"), "{page}");
    assert!(page.contains("data-action=\"delete\" hidden"), "{page}");
    assert!(page.contains(&hostname));
    let (s, _, _) = br
        .post(
            &format!("/servers/{id}/delete"),
            &[("csrf", csrf.as_str()), ("confirm", hostname.as_str())],
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "deleted already");
}
both_backends!(errors_ui, errors_and_validation);

/// The admin pages' forms over HTTP: a pool generated from a CIDR (and a
/// bad CIDR refused beside its field, the input kept), a pasted CSV pool,
/// a pool's addresses, a server type, a group and its member, a quota,
/// and a user disabled (logged out, refused at login) and enabled again.
async fn admin_forms(b: Backend) {
    let p = start(b, |_| {}).await;
    p.user("root", true).await;
    p.user("dave", false).await;
    let mut br = Browser {
        p: &p,
        http: reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap(),
        cookie: None,
    };
    log_in(&mut br, "root").await;
    let (_, body, _) = br.get("/admin/pools").await;
    let csrf = csrf_of(&body);
    let pool = |cidr: &'static str| {
        vec![
            ("name", "gen"),
            ("pool_type", "public"),
            ("cidr4", cidr),
            ("cidr6", ""),
            ("hostname_pattern", "g-{n:03}.example.org"),
            ("count", "4"),
            ("quarantine_secs", ""),
        ]
    };
    let mut bad: Vec<(&str, &str)> = pool("192.0.2.0/33");
    bad.push(("csrf", csrf.as_str()));
    let (s, body, _) = br.post("/admin/pools", &bad).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("id=\"error-cidr4\""), "{body}");
    assert!(body.contains("value=\"g-{n:03}.example.org\""), "{body}");
    let mut good: Vec<(&str, &str)> = pool("192.0.2.0/28");
    good.push(("csrf", csrf.as_str()));
    let (s, _, _) = br.post("/admin/pools", &good).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let csv = "hostname,ipv4,ipv6,gateway4,netmask4,gateway6\nc1.example.org,198.51.100.10,,198.51.100.1,255.255.255.0,\nc2.example.org,198.51.100.11,,198.51.100.1,255.255.255.0,\n";
    let (s, _, _) = br
        .post(
            "/admin/pools/import",
            &[
                ("csrf", csrf.as_str()),
                ("format", "csv"),
                ("text", csv),
                ("pool", "pasted"),
                ("pool_type", "private"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, body, _) = br.get("/admin/pools").await;
    assert!(
        body.contains(">gen</a>") && body.contains(">pasted</a>"),
        "{body}"
    );
    let pools = keel_panel::alloc::pool_use(p.db()).await.unwrap();
    let gen = pools.iter().find(|x| x.name == "gen").unwrap();
    assert_eq!((gen.total, gen.free), (4, 4));
    let (_, body, _) = br.get(&format!("/admin/pools/{}", gen.id)).await;
    assert!(
        body.contains("<td>g-001.example.org</td><td>192.0.2.2</td>"),
        "{body}"
    );
    assert!(body.contains("status-free"), "{body}");

    // Server type, group and member, quota.
    let (s, _, _) = br
        .post(
            "/admin/server-types",
            &[
                ("csrf", csrf.as_str()),
                ("name", "medium"),
                ("cpus", "2"),
                ("ram_mb", "2048"),
                ("disk_gb", "20"),
                ("os_image", "debian-13"),
                ("roles", ""),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (s, body, _) = br
        .post(
            "/admin/server-types",
            &[
                ("csrf", csrf.as_str()),
                ("name", "big"),
                ("cpus", "two"),
                ("ram_mb", "2048"),
                ("disk_gb", "20"),
                ("os_image", "debian-13"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("id=\"error-cpus\""), "{body}");
    assert!(body.contains("value=\"two\""), "{body}");
    let (_, body, _) = br.get("/admin/server-types").await;
    assert!(
        body.contains("<tr data-type=\"medium\"><td>medium</td>"),
        "{body}"
    );
    let (s, _, _) = br
        .post(
            "/admin/groups",
            &[("csrf", csrf.as_str()), ("name", "staff")],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let group =
        keel_panel::services::groups::list(p.db(), &keel_panel::domain::Principal::system())
            .await
            .unwrap()[0]
            .id;
    let (s, _, _) = br
        .post(
            &format!("/admin/groups/{group}/members"),
            &[("csrf", csrf.as_str()), ("user", "dave")],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, body, _) = br.get("/admin/groups").await;
    assert!(
        body.contains("<td class=\"group-members\">dave</td>"),
        "{body}"
    );
    let (s, _, _) = br
        .post(
            "/admin/quotas",
            &[
                ("csrf", csrf.as_str()),
                ("subject", &format!("group:{group}")),
                ("max_vms", "3"),
                ("max_vcpus", "6"),
                ("max_ram_mb", "6000"),
                ("max_disk_gb", "60"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, body, _) = br.get("/admin/quotas").await;
    assert!(body.contains("data-quota=\"group:staff\""), "{body}");

    // Disable dave: his login is refused until he is enabled again.
    let dave = keel_panel::auth::user_by_name(p.db(), "dave")
        .await
        .unwrap()
        .unwrap();
    let (s, body, _) = br
        .post(
            &format!("/admin/users/{}/disable", dave.id),
            &[("csrf", csrf.as_str())],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "a confirmation page first");
    assert!(body.contains("Disable this account?"), "{body}");
    let (s, _, _) = br
        .post(
            &format!("/admin/users/{}/disable", dave.id),
            &[("csrf", csrf.as_str()), ("confirmed", "yes")],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, body, _) = br.get("/admin/users").await;
    assert!(
        body.contains("<tr data-user=\"dave\">") && body.contains("disabled</span>"),
        "{body}"
    );
    let mut other = Browser {
        p: &p,
        http: reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap(),
        cookie: None,
    };
    let (s, _, _) = other
        .post("/login", &[("name", "dave"), ("password", "dave-password")])
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = br
        .post(
            &format!("/admin/users/{}/enable", dave.id),
            &[("csrf", csrf.as_str())],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    log_in(&mut other, "dave").await;
}
both_backends!(admin_ui, admin_forms);

/// The login returns to the page the visitor asked for (`next`), and only
/// to a page of this panel: an absolute URL, `//host`, `/\host` or a path
/// with a tab or line break (which browsers drop) sends the login to the
/// dashboard instead, never to another site.
async fn login_returns_to_the_page(b: Backend) {
    let p = start(b, |_| {}).await;
    p.user("alice", false).await;
    let br = Browser {
        p: &p,
        http: reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap(),
        cookie: None,
    };
    // An anonymous visit goes to the login page with the page as `next`,
    // query included; the login page carries it in its form.
    let (s, _, h) = br.get("/runs?status=failed&offset=0").await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(
        h["location"],
        "/login?next=%2Fruns%3Fstatus%3Dfailed%26offset%3D0"
    );
    let (s, body, _) = br
        .get("/login?next=%2Fruns%3Fstatus%3Dfailed%26offset%3D0")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        body.contains(
            r#"<input type="hidden" name="next" value="&#x2f;runs?status=failed&amp;offset=0">"#
        ),
        "{body}"
    );
    // The dashboard itself needs no `next`.
    let (_, _, h) = br.get("/").await;
    assert_eq!(h["location"], "/login");
    // A failed login keeps `next` for the second try.
    let (s, body, _) = br
        .post(
            "/login",
            &[
                ("name", "alice"),
                ("password", "wrong-password"),
                ("next", "/keys"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(body.contains(r#"name="next" value="&#x2f;keys""#), "{body}");
    for (next, to) in [
        ("/keys", "/keys"),
        (
            "/runs?status=failed&offset=0",
            "/runs?status=failed&offset=0",
        ),
        ("", "/"),
        ("https://evil.example/", "/"),
        ("//evil.example/keys", "/"),
        ("/\\evil.example", "/"),
        ("\\\\evil.example", "/"),
        ("/\t/evil.example", "/"),
        ("/\r\n/evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("keys", "/"),
    ] {
        let (s, _, h) = br
            .post(
                "/login",
                &[
                    ("name", "alice"),
                    ("password", "alice-password"),
                    ("next", next),
                ],
            )
            .await;
        assert_eq!(s, StatusCode::SEE_OTHER, "{next:?}");
        assert_eq!(h["location"], to, "next = {next:?}");
        assert!(h.contains_key("set-cookie"), "{next:?} logs in");
    }
    // A foreign `next` on the login page is dropped, not carried.
    let (_, body, _) = br.get("/login?next=%2F%2Fevil.example").await;
    assert!(!body.contains("evil.example"), "{body}");
}
both_backends!(login_next, login_returns_to_the_page);
