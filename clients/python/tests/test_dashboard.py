"""The web dashboard of `pgfork serve` (issue 16) in a real browser:
Debian's chromium, headless, driven by Playwright for Python. The tests
rely only on the HTML contract of the pages (URLs, ids, classes): log in,
watch a branch appear without a reload, read what an agent ran through
the proxy and the diff of its change, approve its promotion and see the
source change, delete a branch, check what another agent's token may see
and do, and that a POST without the CSRF token is refused. Every page
visited is saved as a full-page screenshot under
``$PGFORK_TEST_SCREENSHOTS`` (default ``target/dashboard-screenshots``)."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import psycopg
import pytest
from playwright.sync_api import Browser, Page, Response, expect, sync_playwright

from conftest import ROOT, Server

CHROMIUM = os.environ.get("PGFORK_TEST_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("PGFORK_TEST_SCREENSHOTS") or ROOT / "target" / "dashboard-screenshots")

# What agent A changes on its branch. The ids are the file's own: the
# source is shared with the other test files, and the promotion's changes
# are undone on it afterwards.
CHANGED_ID = 321
OLD_EMAIL = f"c{CHANGED_ID}@example.com"
NEW_EMAIL = "dash-changed@example.com"
NEW_ID = 100001
NEW_ROW_EMAIL = "dash-new@example.com"
HOSTILE_ID = 100002
HOSTILE_EMAIL = '<img src=x onerror="window.__pwned=1">'
HOSTILE_SCRIPT = "<script>window.__pwned=2</script>"
UPDATE_SQL = f"UPDATE customers SET email = '{NEW_EMAIL}' WHERE id = {CHANGED_ID}"
INSERT_SQL = f"INSERT INTO customers VALUES ({NEW_ID}, '{NEW_ROW_EMAIL}')"
HOSTILE_INSERT_SQL = "INSERT INTO customers VALUES ({}, '{}')".format(HOSTILE_ID, HOSTILE_EMAIL)
# A string and a comment that try to close the statements table and run.
HOSTILE_SELECT_SQL = (
    f"SELECT '{HOSTILE_SCRIPT}' AS hostile /* </td></tr></table><script>window.__pwned=3</script> */"
)
# Agent B's own change, never promoted.
B_ID = 100003

LIVE = 15_000  # ms: data-live elements refresh every 3 s
SLOW = 60_000  # ms: diffs and promotions run real work on real servers


# --- helpers ------------------------------------------------------------------


def api(server: Server, method: str, path: str, token: str, body: Optional[dict] = None) -> Tuple[int, Any]:
    """One JSON API call; returns (status, decoded body)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Accept": "application/json", "Authorization": f"Bearer {token}"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(server.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            status, payload = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, payload = e.code, e.read()
    try:
        return status, json.loads(payload) if payload else None
    except ValueError:
        return status, payload.decode(errors="replace")


def api_ok(server: Server, method: str, path: str, token: str, body: Optional[dict] = None) -> Any:
    status, out = api(server, method, path, token, body)
    assert 200 <= status < 300, f"{method} {path}: {status} {out}"
    return out


def shot(page: Page, name: str) -> None:
    """A full-page screenshot of what the page shows now, as a test artifact."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def login(page: Page, server: Server, token: str) -> None:
    page.goto(server.url + "/login")
    page.locator("form#login input[name=token]").fill(token)
    with page.expect_navigation():
        page.locator("form#login button[type=submit]").click()
    expect(page).to_have_url(server.url + "/")


def goto(page: Page, server: Server, path: str) -> Response:
    resp = page.goto(server.url + path)
    assert resp is not None, path
    return resp


def submit_post(page: Page, path: str, fields: dict) -> Response:
    """Posts a form from the page the browser shows, as a page's own form
    would (same origin, the session cookie), and returns the response."""
    with page.expect_navigation() as nav:
        page.evaluate(
            """([path, fields]) => {
                const f = document.createElement('form');
                f.method = 'POST';
                f.action = path;
                for (const [k, v] of Object.entries(fields)) {
                    const i = document.createElement('input');
                    i.type = 'hidden'; i.name = k; i.value = v;
                    f.appendChild(i);
                }
                document.body.appendChild(f);
                f.submit();
            }""",
            [path, fields],
        )
    resp = nav.value
    assert resp is not None, path
    return resp


def csrf_of(page: Page) -> str:
    """The page's CSRF token, from the logout form every page has."""
    token = page.locator("form#logout input[name=csrf]").input_value()
    assert token, "form#logout has an empty csrf input"
    return token


def password_of(dsn: str) -> str:
    password = urllib.parse.urlparse(dsn).password
    assert password, f"no password in {dsn}"
    return urllib.parse.unquote(password)


def pwned(page: Page) -> Any:
    return page.evaluate("() => window.__pwned")


def source_rows(server: Server, sql: str) -> List[tuple]:
    dsn = server.json("source", "dsn", "shop")["dsn"]
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


# --- fixtures (`server` and `proxy` are conftest's) ------------------------


@dataclass
class Agent:
    name: str
    secret: str
    api_token: str
    branch: str


def _agent(server: Server, proxy: int, name: str, statements: List[str]) -> Agent:
    """An agent with the branch policy that ran `statements` through the
    proxy, on its own branch."""
    made = server.json("agent", "create", name, "--source", "shop", "--policy", "branch")
    secret, token = made["secret"], made["api_token"]
    with psycopg.connect(f"postgresql://{name}:{secret}@127.0.0.1:{proxy}/shop", autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql)
    branch = api_ok(server, "GET", f"/v1/agents/{name}", server.token)["branch"]
    assert branch == f"agent-{name}", branch
    return Agent(name, secret, token, branch)


@pytest.fixture(scope="module")
def agent_a(server: Server, proxy: int) -> Agent:
    """Agent A changed one customer's email, added one, added a hostile one
    and ran a hostile SELECT, in this order (the SELECT is the newest)."""
    return _agent(server, proxy, "dash_a", [UPDATE_SQL, INSERT_SQL, HOSTILE_INSERT_SQL, HOSTILE_SELECT_SQL])


@pytest.fixture(scope="module")
def promotion_a(server: Server, agent_a: Agent) -> int:
    """Agent A's request to promote its branch, made with its own token."""
    req = api_ok(
        server,
        "POST",
        "/v1/promotions",
        agent_a.api_token,
        {"branch": agent_a.branch, "note": "dash: a changed email and two new customers"},
    )
    assert req["status"] == "open", req
    return int(req["id"])


@pytest.fixture(scope="module")
def agent_b(server: Server, proxy: int) -> Iterator[Tuple[Agent, int]]:
    """Agent B, with a change of its own and an open promotion request of
    it (rejected at the end, never approved)."""
    b = _agent(server, proxy, "dash_b", [f"INSERT INTO customers VALUES ({B_ID}, 'dash-b@example.com')"])
    req = api_ok(server, "POST", "/v1/promotions", b.api_token, {"branch": b.branch, "note": "dash: agent B"})
    yield b, int(req["id"])
    api(server, "POST", f"/v1/promotions/{req['id']}/reject", server.token, {"reason": "test over"})


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where chromium's sandbox refuses to start.
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh context (its own cookies); fails the test if a
    script of the dashboard threw."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    pg = context.new_page()
    errors: List[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield pg
    finally:
        context.close()
    assert not errors, f"uncaught errors in the dashboard's scripts: {errors}"


# --- tests --------------------------------------------------------------------


def test_login_logout_and_a_bad_token(server: Server, page: Page) -> None:
    # No session: every page sends the browser to the login form.
    goto(page, server, "/promotions")
    expect(page).to_have_url(re.compile("^" + re.escape(server.url + "/login") + r"(\?.*)?$"))
    form = page.locator("form#login")
    expect(form).to_be_visible()
    expect(form.locator("input[name=token]")).to_have_attribute("type", "password")
    shot(page, "login")

    form.locator("input[name=token]").fill("not-a-token")
    with page.expect_navigation() as nav:
        form.locator("button[type=submit]").click()
    assert nav.value is not None and nav.value.status == 401
    expect(page.locator(".flash.error")).to_be_visible()
    shot(page, "login-refused")
    goto(page, server, "/")
    expect(page).to_have_url(re.compile("^" + re.escape(server.url + "/login") + r"(\?.*)?$"))

    login(page, server, server.token)
    expect(page.locator("#whoami")).to_have_text(re.compile(r"^\s*admin:\S+\s*$"))
    session = [c for c in page.context.cookies() if c["name"] == "pgfork_session"]
    assert len(session) == 1, page.context.cookies()
    cookie = session[0]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/", cookie
    assert "pgfork_session" not in page.evaluate("() => document.cookie")
    nav_bar = page.locator("nav")
    for href in ["/", "/promotions", "/sources", "/agents", "/audit"]:
        expect(nav_bar.locator(f'a[href="{href}"]')).to_have_count(1)
    expect(page.locator("table#branches")).to_be_visible()
    expect(page.locator("table#branches")).to_have_attribute("data-live", re.compile(".*"))
    filters = page.locator("form#filters")
    expect(filters.locator("select[name=source]")).to_have_count(1)
    expect(filters.locator("input[name=label]")).to_have_count(1)
    shot(page, "branches")

    with page.expect_navigation():
        page.locator("form#logout button, form#logout input[type=submit]").first.click()
    goto(page, server, "/")
    expect(page).to_have_url(re.compile("^" + re.escape(server.url + "/login") + r"(\?.*)?$"))
    # The server forgot the session: its old cookie no longer signs anyone in.
    page.context.add_cookies(session)
    goto(page, server, "/")
    expect(page).to_have_url(re.compile("^" + re.escape(server.url + "/login") + r"(\?.*)?$"))


def test_a_branch_made_through_the_api_appears_and_goes_without_a_reload(server: Server, page: Page) -> None:
    name = "dash-live"
    login(page, server, server.token)
    expect(page.locator("table#branches")).to_be_visible()
    expect(page.locator(f'tr[data-branch="{name}"]')).to_have_count(0)
    page.evaluate("() => { window.__marker = 1; }")

    api_ok(server, "POST", "/v1/branches", server.token, {"name": name, "from": "shop"})
    try:
        row = page.locator(f'table#branches tr[data-branch="{name}"]')
        expect(row).to_be_visible(timeout=LIVE)
        expect(row.locator(f'a.branch-link[href="/branches/{name}"]')).to_be_visible()
        expect(row.locator("td.status")).to_have_text(re.compile("running"))
        assert page.evaluate("() => window.__marker") == 1, "the page was reloaded"
        expect(page).to_have_url(server.url + "/")
        shot(page, "branches-live")

        api_ok(server, "DELETE", f"/v1/branches/{name}", server.token)
        expect(row).to_have_count(0, timeout=LIVE)
        assert page.evaluate("() => window.__marker") == 1, "the page was reloaded"
    finally:
        api(server, "DELETE", f"/v1/branches/{name}", server.token)


def test_branch_filters(server: Server, page: Page, agent_a: Agent) -> None:
    login(page, server, server.token)
    filters = page.locator("form#filters")
    expect(filters.locator('select[name=source] option[value="shop"]')).to_have_count(1)
    expect(filters.locator(f'select[name=agent] option[value="{agent_a.name}"]')).to_have_count(1)
    listed = page.locator("table#branches tr[data-branch]")
    for query in [f"agent={agent_a.name}", f"label=pgfork.agent%3D{agent_a.name}"]:
        goto(page, server, f"/?{query}")
        expect(page.locator(f'tr[data-branch="{agent_a.branch}"]')).to_be_visible()
        names = listed.evaluate_all("(rows) => rows.map(r => r.dataset.branch)")
        assert names == [agent_a.branch], (query, names)
    # The filter form itself gets there too.
    goto(page, server, "/")
    filters.locator("select[name=agent]").select_option(agent_a.name)
    with page.expect_navigation():
        filters.locator("button[type=submit], input[type=submit]").first.click()
    assert f"agent={agent_a.name}" in page.url
    assert listed.evaluate_all("(rows) => rows.map(r => r.dataset.branch)") == [agent_a.branch]
    goto(page, server, "/?source=shop")
    expect(page.locator(f'tr[data-branch="{agent_a.branch}"]')).to_be_visible()
    shot(page, "branches-filtered")


def test_branch_actions_from_the_page(server: Server, page: Page) -> None:
    name = "dash-acts"
    api_ok(server, "POST", "/v1/branches", server.token, {"name": name, "from": "shop"})
    try:
        login(page, server, server.token)
        goto(page, server, f"/branches/{name}")
        for action in ["form.action-reset", "form.action-stop", "form.action-ttl", "details.delete-branch"]:
            expect(page.locator(action)).to_have_count(1)
        for form in ["form.action-reset", "form.action-stop", "form.action-ttl", "form.action-delete"]:
            expect(page.locator(f"{form} input[name=csrf]")).to_have_count(1)
        shot(page, "branch-actions")

        page.locator("form.action-ttl input[name=ttl]").fill("2h")
        with page.expect_navigation():
            page.locator("form.action-ttl button").click()
        expect(page.locator(".flash.ok")).to_be_visible()
        assert api_ok(server, "GET", f"/v1/branches/{name}", server.token)["expires_at"]

        with page.expect_navigation(timeout=SLOW):
            page.locator("form.action-stop button").click()
        expect(page.locator(".flash.ok")).to_be_visible()
        assert api_ok(server, "GET", f"/v1/branches/{name}", server.token)["status"] == "stopped"
        goto(page, server, f"/branches/{name}")
        expect(page.locator("form.action-stop")).to_have_count(0)
        with page.expect_navigation(timeout=SLOW):
            page.locator("form.action-start button").click()
        expect(page.locator(".flash.ok")).to_be_visible()
        assert api_ok(server, "GET", f"/v1/branches/{name}", server.token)["status"] == "running"

        dsn = api_ok(server, "GET", f"/v1/branches/{name}/dsn", server.token)["dsn"]
        with psycopg.connect(dsn) as conn:
            conn.execute("DELETE FROM orders WHERE id <= 10")
        goto(page, server, f"/branches/{name}")
        with page.expect_navigation(timeout=SLOW):
            page.locator("form.action-reset button").click()
        expect(page.locator(".flash.ok")).to_be_visible()
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 2000
    finally:
        api(server, "DELETE", f"/v1/branches/{name}", server.token)


def test_branch_page_shows_statements_diff_and_the_dsn_on_demand(
    server: Server, page: Page, agent_a: Agent
) -> None:
    login(page, server, server.token)
    row = page.locator(f'table#branches tr[data-branch="{agent_a.branch}"]')
    expect(row).to_be_visible()
    with page.expect_navigation():
        row.locator(f'a.branch-link[href="/branches/{agent_a.branch}"]').click()
    expect(page).to_have_url(server.url + f"/branches/{agent_a.branch}")
    expect(page.locator("h1")).to_contain_text(agent_a.branch)

    # What the agent ran, newest first.
    statements = page.locator("table#statements")
    expect(statements).to_have_attribute("data-live", re.compile(".*"))
    update = statements.locator("tr.statement", has_text=UPDATE_SQL)
    expect(update).to_have_count(1, timeout=LIVE)
    expect(update.locator("td.sql")).to_have_text(UPDATE_SQL)
    expect(update.locator("td.rows")).to_have_text(re.compile(r"\b1\b"))
    expect(update.locator("td.duration")).to_have_count(1)
    expect(update.locator("td.error")).to_have_count(1)
    texts = statements.locator("tr.statement td.sql").all_inner_texts()
    newest = next(i for i, t in enumerate(texts) if HOSTILE_SCRIPT in t)
    oldest = next(i for i, t in enumerate(texts) if "UPDATE customers" in t)
    assert newest < oldest, f"statements are not newest first: {texts}"

    # The diff, loaded after the page.
    diff = page.locator("section#diff")
    expect(diff.locator(".loading")).to_have_count(0, timeout=SLOW)
    customers = diff.locator('table.rows[data-table="public.customers"]')
    expect(customers).to_be_visible()
    expect(customers.locator("tr.before", has_text=OLD_EMAIL)).to_have_count(1)
    after = customers.locator("tr.after", has_text=NEW_EMAIL)
    expect(after).to_have_count(1)
    expect(after.locator("td.changed")).to_have_text(NEW_EMAIL)
    expect(customers.locator("td.changed", has_text=re.compile(rf"^\s*{CHANGED_ID}\s*$"))).to_have_count(0)
    expect(customers.locator("tr.insert", has_text=NEW_ROW_EMAIL)).to_have_count(1)
    expect(customers.locator("tr.delete")).to_have_count(0)
    expect(page.locator("svg#storage-chart")).to_have_count(1)

    # The DSN's password only after asking for it.
    dsn = api_ok(server, "GET", f"/v1/branches/{agent_a.branch}/dsn", server.token)["dsn"]
    password = password_of(dsn)
    value = page.locator("#dsn code#dsn-value")
    expect(value).to_have_text(re.sub(r"^(postgresql://[^:/@]+:)[^@]*@", r"\1********@", dsn))
    expect(page.locator("#dsn button#copy-dsn")).to_have_count(1)
    assert password not in page.content(), "the DSN's password is in the page before it was revealed"
    shot(page, "branch")
    page.locator("#dsn button#reveal-dsn").click()
    expect(value).to_have_text(dsn)
    shot(page, "branch-dsn-revealed")
    # Hidden again on the next visit.
    goto(page, server, f"/branches/{agent_a.branch}")
    expect(value).to_contain_text(":********@")
    assert password not in page.content()


def test_hostile_statements_and_rows_show_as_text(server: Server, page: Page, agent_a: Agent) -> None:
    login(page, server, server.token)
    goto(page, server, f"/branches/{agent_a.branch}")
    statements = page.locator("table#statements")
    expect(statements.locator("td.sql", has_text=HOSTILE_SCRIPT)).to_have_count(1, timeout=LIVE)
    expect(statements.locator("td.sql", has_text=HOSTILE_INSERT_SQL)).to_have_count(1)
    expect(statements.locator("td.sql", has_text="</td></tr></table>")).to_have_count(1)
    diff = page.locator("section#diff")
    expect(diff.locator(".loading")).to_have_count(0, timeout=SLOW)
    customers = diff.locator('table.rows[data-table="public.customers"]')
    expect(customers.locator("tr.insert", has_text=HOSTILE_EMAIL)).to_have_count(1)
    expect(customers.locator("tr.insert td", has_text=HOSTILE_EMAIL)).to_be_visible()
    # Let the live parts refresh at least once: what they bring in is
    # inserted by script, which must not make markup of it either.
    page.wait_for_timeout(7_000)
    expect(statements.locator("td.sql", has_text=HOSTILE_SCRIPT)).to_have_count(1)
    expect(page.locator('img[src="x"]')).to_have_count(0)
    ran = page.locator("script").evaluate_all(
        "(all) => all.filter(s => (!s.type || /javascript|module/.test(s.type))"
        " && s.textContent.includes('__pwned')).length"
    )
    assert ran == 0, "a script element of the hostile text is in the page"
    assert pwned(page) is None, f"window.__pwned = {pwned(page)}"
    shot(page, "branch-hostile")

    goto(page, server, "/audit")
    expect(page.locator("table#audit tr.record", has_text=HOSTILE_SCRIPT).first).to_be_visible()
    page.wait_for_timeout(4_000)
    expect(page.locator('img[src="x"]')).to_have_count(0)
    assert pwned(page) is None, f"window.__pwned = {pwned(page)} on /audit"


def test_agent_b_sees_only_its_own_and_cannot_approve(
    server: Server, page: Page, agent_a: Agent, promotion_a: int, agent_b: Tuple[Agent, int]
) -> None:
    b, b_promotion = agent_b
    a_status = api_ok(server, "GET", f"/v1/promotions/{promotion_a}", server.token)["status"]
    login(page, server, b.api_token)
    expect(page.locator("#whoami")).to_have_text(re.compile(rf"^\s*agent:{b.name}\s*$"))
    expect(page.locator(f'table#branches tr[data-branch="{b.branch}"]')).to_be_visible()
    expect(page.locator(f'tr[data-branch="{agent_a.branch}"]')).to_have_count(0)
    page.wait_for_timeout(4_000)  # and not after a live refresh either
    expect(page.locator(f'tr[data-branch="{agent_a.branch}"]')).to_have_count(0)
    shot(page, "agent-branches")

    resp = goto(page, server, f"/branches/{agent_a.branch}")
    assert resp.status == 404, f"agent B opened agent A's branch page: {resp.status}"
    assert agent_a.secret not in page.content()
    shot(page, "agent-branch-404")
    resp = goto(page, server, f"/branches/{b.branch}")
    assert resp.status == 200
    expect(page.locator("h1")).to_contain_text(b.branch)

    goto(page, server, "/promotions")
    expect(page.locator(f'table#promotions tr[data-promotion="{b_promotion}"]')).to_be_visible()
    expect(page.locator(f'tr[data-promotion="{promotion_a}"]')).to_have_count(0)
    shot(page, "agent-promotions")

    goto(page, server, f"/promotions/{b_promotion}")
    expect(page.locator(".status").first).to_have_text(re.compile("open"))
    expect(page.locator("form.action-approve")).to_have_count(0)
    expect(page.locator("form.action-reject")).to_have_count(0)
    shot(page, "agent-promotion")
    csrf = csrf_of(page)

    resp = goto(page, server, f"/promotions/{promotion_a}")
    assert resp.status in (403, 404), f"agent B opened agent A's promotion: {resp.status}"
    expect(page.locator("form.action-approve")).to_have_count(0)

    # With its own valid CSRF token, an agent's approval is still refused.
    goto(page, server, "/")
    resp = submit_post(page, f"/promotions/{b_promotion}/approve", {"csrf": csrf})
    assert resp.status == 403, f"an agent approved (or tried to): {resp.status}"
    expect(page.locator(".flash.error")).to_be_visible()
    shot(page, "agent-approve-refused")
    goto(page, server, "/")
    resp = submit_post(page, f"/promotions/{promotion_a}/approve", {"csrf": csrf})
    assert resp.status in (403, 404), f"agent B approving agent A's request: {resp.status}"
    # ...and another agent's DSN is not handed out.
    resp = page.request.post(server.url + f"/branches/{agent_a.branch}/dsn", form={"csrf": csrf})
    assert resp.status in (403, 404), resp.status
    dsn = api_ok(server, "GET", f"/v1/branches/{agent_a.branch}/dsn", server.token)["dsn"]
    assert password_of(dsn) not in resp.text()

    assert api_ok(server, "GET", f"/v1/promotions/{b_promotion}", server.token)["status"] == "open"
    assert api_ok(server, "GET", f"/v1/promotions/{promotion_a}", server.token)["status"] == a_status


def test_posts_without_the_csrf_token_are_refused(server: Server, page: Page, agent_a: Agent) -> None:
    login(page, server, server.token)
    goto(page, server, f"/branches/{agent_a.branch}")
    # The request context carries the session cookie...
    home = page.request.get(server.url + "/", max_redirects=0)
    assert home.status == 200, f"page.request has no session: {home.status}"

    # ...yet without the CSRF token, or with a wrong one, nothing is done.
    for form in ({}, {"csrf": "wrong"}, {"csrf": ""}):
        resp = page.request.post(server.url + f"/branches/{agent_a.branch}/reset", form=form)
        assert resp.status == 403, (form, resp.status)
        assert "CSRF" in resp.text(), (form, resp.text()[:500])
    dsn = api_ok(server, "GET", f"/v1/branches/{agent_a.branch}/dsn", server.token)["dsn"]
    resp = page.request.post(server.url + f"/branches/{agent_a.branch}/dsn", form={})
    assert resp.status == 403 and "CSRF" in resp.text(), resp.status
    assert password_of(dsn) not in resp.text()

    # A form posted by the browser itself, without the token: refused too.
    resp = submit_post(page, f"/branches/{agent_a.branch}/reset", {})
    assert resp.status == 403
    expect(page.locator("body")).to_contain_text("CSRF")

    # The branch was not reset: agent A's changes are still there.
    goto(page, server, f"/branches/{agent_a.branch}")
    diff = page.locator("section#diff")
    expect(diff.locator(".loading")).to_have_count(0, timeout=SLOW)
    customers = diff.locator('table.rows[data-table="public.customers"]')
    expect(customers.locator("tr.insert", has_text=NEW_ROW_EMAIL)).to_have_count(1)


def test_approving_a_promotion_changes_the_source(
    server: Server, page: Page, agent_a: Agent, promotion_a: int
) -> None:
    login(page, server, server.token)
    goto(page, server, f"/branches/{agent_a.branch}")
    expect(page.locator(f'#promotions a[href="/promotions/{promotion_a}"]')).to_be_visible()
    goto(page, server, "/promotions")
    row = page.locator(f'table#promotions tr[data-promotion="{promotion_a}"]')
    expect(row).to_be_visible()
    expect(row.locator("td.status")).to_have_text(re.compile("open"))
    shot(page, "promotions")
    with page.expect_navigation():
        row.locator(f'a[href="/promotions/{promotion_a}"]').click()
    expect(page).to_have_url(server.url + f"/promotions/{promotion_a}")
    expect(page.locator(".status").first).to_have_text(re.compile("open"))
    expect(page.locator("form.action-reject textarea[name=reason]")).to_have_count(1)
    approve = page.locator("form.action-approve")
    expect(approve).to_have_count(1)
    expect(approve.locator("input[name=csrf]")).to_have_count(1)
    # Whatever the page loads after itself (the diff, with the hostile row) is in.
    expect(page.locator(".loading")).to_have_count(0, timeout=SLOW)
    expect(page.locator('img[src="x"]')).to_have_count(0)
    assert pwned(page) is None
    shot(page, "promotion")

    try:
        with page.expect_navigation(timeout=SLOW):
            approve.locator("button").click()
        expect(page.locator(".flash.ok")).to_be_visible()
        goto(page, server, f"/promotions/{promotion_a}")
        expect(page.locator(".status").first).to_have_text(re.compile("approved"))
        expect(page.locator("form.action-approve")).to_have_count(0)
        shot(page, "promotion-approved")

        rows = source_rows(
            server,
            f"SELECT id, email FROM customers WHERE id IN ({CHANGED_ID}, {NEW_ID}, {HOSTILE_ID}) ORDER BY id",
        )
        assert rows == [(CHANGED_ID, NEW_EMAIL), (NEW_ID, NEW_ROW_EMAIL), (HOSTILE_ID, HOSTILE_EMAIL)], rows
        goto(page, server, "/promotions")
        expect(
            page.locator(f'table#promotions tr[data-promotion="{promotion_a}"] td.status')
        ).to_have_text(re.compile("approved"))
    finally:
        # The source is shared with the other test files: put it back, and
        # take a snapshot so that branches made later start from it.
        changed = source_rows(
            server,
            f"SELECT count(*) FROM customers WHERE id IN ({NEW_ID}, {HOSTILE_ID}) OR email = '{NEW_EMAIL}'",
        )[0][0]
        if changed:
            dsn = server.json("source", "dsn", "shop")["dsn"]
            with psycopg.connect(dsn) as conn:
                conn.execute("DELETE FROM customers WHERE id IN (%s, %s)", (NEW_ID, HOSTILE_ID))
                conn.execute("UPDATE customers SET email = %s WHERE id = %s", (OLD_EMAIL, CHANGED_ID))
            server.json("snapshot", "create", "shop")


def test_deleting_a_branch_from_its_page(server: Server, page: Page) -> None:
    name = "dash-doomed"
    api_ok(server, "POST", "/v1/branches", server.token, {"name": name, "from": "shop"})
    try:
        login(page, server, server.token)
        goto(page, server, f"/branches/{name}")
        expect(page.locator("h1")).to_contain_text(name)
        delete = page.locator("details.delete-branch")
        expect(delete.locator("form.action-delete button")).not_to_be_visible()
        delete.locator("summary").click()
        button = delete.locator("form.action-delete button")
        expect(button).to_be_visible()
        shot(page, "branch-delete")
        with page.expect_navigation(timeout=SLOW):
            button.click()
        expect(page).to_have_url(server.url + "/")
        expect(page.locator(".flash.ok")).to_be_visible()
        expect(page.locator(f'tr[data-branch="{name}"]')).to_have_count(0)
        shot(page, "branches-after-delete")
        status, _ = api(server, "GET", f"/v1/branches/{name}", server.token)
        assert status == 404, status
    finally:
        api(server, "DELETE", f"/v1/branches/{name}", server.token)


def test_sources_page(server: Server, page: Page, agent_a: Agent) -> None:
    login(page, server, server.token)
    goto(page, server, "/sources")
    shop = page.locator('section.source[data-source="shop"]')
    expect(shop).to_be_visible()
    expect(shop.locator("table")).not_to_have_count(0)
    expect(shop).to_contain_text(agent_a.branch)
    shot(page, "sources")


def test_agents_page_and_a_rotation(server: Server, page: Page, agent_a: Agent) -> None:
    # A spare agent to rotate: its new secret is shown once.
    server.json("agent", "create", "dash_c", "--source", "shop", "--policy", "branch")
    login(page, server, server.token)
    goto(page, server, "/agents")
    a_row = page.locator('tr[data-agent="dash_a"]')
    expect(a_row).to_be_visible()
    expect(a_row.locator("form.action-rotate")).to_have_count(1)
    expect(a_row.locator("form.action-revoke")).to_have_count(1)
    assert agent_a.secret not in page.content() and agent_a.api_token not in page.content()
    shot(page, "agents")
    with page.expect_navigation():
        page.locator('tr[data-agent="dash_c"] form.action-rotate button').click()
    secret = page.locator(".secret")
    expect(secret.first).to_be_visible()
    assert len(secret.first.inner_text().strip()) >= 16
    shot(page, "agents-rotated")
    goto(page, server, "/agents")
    expect(page.locator(".secret")).to_have_count(0)


def test_audit_page_and_search(server: Server, page: Page, agent_a: Agent) -> None:
    login(page, server, server.token)
    goto(page, server, "/audit")
    search = page.locator("form#audit-search")
    expect(search.locator("input[name=q]")).to_have_count(1)
    expect(search.locator("input[name=agent]")).to_have_count(1)
    expect(page.locator("table#audit tr.record")).not_to_have_count(0)
    expect(page.locator("#chain")).to_contain_text("verified")
    shot(page, "audit")
    search.locator("input[name=q]").fill(NEW_ROW_EMAIL)
    with page.expect_navigation():
        search.locator("input[name=q]").press("Enter")
    assert "q=" in page.url
    records = page.locator("table#audit tr.record")
    expect(records).not_to_have_count(0)
    for text in records.all_inner_texts():
        assert NEW_ROW_EMAIL in text, text
    shot(page, "audit-search")


def test_every_page_fits_a_phone(server: Server, browser: Browser, agent_a: Agent) -> None:
    """At a phone's width (390 px) no page is wider than the screen: tables
    fold into one card per row and the navigation wraps, rather than the
    viewer scrolling sideways."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        login(page, server, server.token)
        for path, name in [
            ("/", "phone-branches"),
            (f"/branches/{agent_a.branch}", "phone-branch"),
            ("/promotions", "phone-promotions"),
            ("/sources", "phone-sources"),
            ("/agents", "phone-agents"),
            ("/audit", "phone-audit"),
        ]:
            goto(page, server, path)
            if path.startswith("/branches/"):
                expect(page.locator("section#diff .loading")).to_have_count(0, timeout=SLOW)
            # Long unbroken values (a DSN, a statement) wrap or scroll inside
            # their own box; the page itself does not.
            overflow = page.evaluate(
                "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{path} is {overflow}px wider than a phone's screen"
            expect(page.locator("nav a[href='/audit']")).to_be_visible()
            shot(page, name)
    finally:
        context.close()
