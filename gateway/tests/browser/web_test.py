"""The web page in a real browser (Debian's chromium, driven by selenium).

Run by gateway/tests/browser.rs against a running gateway:

    GATEWAY_URL=http://127.0.0.1:PORT SCREENSHOTS=DIR python3 web_test.py

Registers in the browser (key made by WebCrypto), creates a subreddit, posts,
comments three levels deep, votes and sees the score change, receives a DM live
from a second browser, exports the key, and logs in again with it from a fresh
browser. Prints `KEY <user> <hex>` (the exported key, which the Rust side then
uses with the CLI) and `ok` at the end.
"""
import os, sys, time
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

BASE = os.environ["GATEWAY_URL"].rstrip("/")
SHOTS = os.environ.get("SCREENSHOTS")
TAG = os.environ.get("TAG", str(int(time.time()) % 100000))


def browser(width=1200, height=900):
    o = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              f"--window-size={width},{height}", "--lang=en-US"):
        o.add_argument(a)
    if os.path.exists("/usr/bin/chromium"):
        o.binary_location = "/usr/bin/chromium"
    d = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=o)
    d.set_page_load_timeout(30)
    d.get(BASE + "/")
    return d


def wait(d, what, cond, timeout=20):
    try:
        return WebDriverWait(d, timeout, poll_frequency=0.05).until(lambda _: cond())
    except Exception as e:
        alert = d.execute_script("return document.getElementById('alert')?.textContent")
        main = d.execute_script("return document.getElementById('main')?.innerText")
        raise AssertionError(f"timed out waiting for {what}; alert={alert!r}\nmain={main[:2000]!r}") from e


def css(d, sel):
    return d.find_elements(By.CSS_SELECTOR, sel)


def go(d, hash_path):
    d.execute_script("location.hash = arguments[0]", hash_path)


def h1(d):
    return d.execute_script("return document.querySelector('main h1')?.textContent || ''")


def submit(d, label, **fields):
    f = wait(d, f"form {label}", lambda: (css(d, f'form[aria-label="{label}"]') or [None])[0])
    for name, value in fields.items():
        el = f.find_element(By.NAME, name)
        el.clear()
        el.send_keys(value)
    f.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def alert(d):
    return d.execute_script("const a = document.getElementById('alert'); return a.hidden ? '' : a.textContent")


def status(d):
    return d.execute_script("return document.getElementById('status').textContent")


def shot(d, name):
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        d.execute_script("window.scrollTo(0, 0)")
        time.sleep(0.3)  # let the last paint land (screenshots only; nothing waits on it)
        d.save_screenshot(os.path.join(SHOTS, f"{name}.png"))


def register(d, name):
    go(d, "#/login")
    submit(d, "Register", username=name)
    wait(d, f"{name} logged in", lambda: d.find_element(By.ID, "me").text == f"u/{name}")


alice, bob, sub = f"alice{TAG}", f"bob{TAG}", f"web{TAG}"
a = browser()
try:
    wait(a, "the front page", lambda: h1(a) == "Subreddits")
    # Bad input gets a visible message, not a blank page.
    go(a, "#/login")
    submit(a, "Log in", username=f"ghost{TAG}")
    wait(a, "the no-key message", lambda: "has no key" in alert(a))
    go(a, "#/r/nosuchsub1")
    wait(a, "a not-found page", lambda: h1(a) == "Not found")

    register(a, alice)
    go(a, "#/")
    submit(a, "Create a subreddit", name=sub, description="made in a browser")
    wait(a, "the new subreddit", lambda: h1(a) == f"r/{sub}")
    wait(a, "the join", lambda: css(a, f'button[data-join="{sub}"]') and css(a, f'button[data-join="{sub}"]')[0].text == "Leave")
    wait(a, "live events", lambda: a.execute_script("return document.body.dataset.live") == "ready")

    submit(a, "New post", title="Hello from the browser", body="Signed with WebCrypto Ed25519.")
    wait(a, "the post page", lambda: h1(a) == "Hello from the browser")
    wait(a, "the post's verified signature", lambda: css(a, "article.post [data-signature=verified]"))
    post_id = css(a, "article[data-post]")[0].get_attribute("data-post")

    # Comments three levels deep, each a reply to the one before.
    submit(a, "New comment", body="level one")
    wait(a, "level one", lambda: css(a, 'details[data-depth="0"]'))
    for depth, text in ((1, "level two"), (2, "level three")):
        parent = css(a, f'details[data-depth="{depth - 1}"]')[0]
        parent.find_element(By.XPATH, "./div//button[text()='Reply']").click()
        submit(a, f"Reply to {alice}", body=text)
        wait(a, text, lambda: any(text in e.text for e in css(a, f'details[data-depth="{depth}"]')))
    wait(a, "every signature checked", lambda: not css(a, "[data-signature=checking]"))
    assert len(css(a, "[data-signature=verified]")) == 4, "post and 3 comments verified"
    assert not css(a, "[data-signature=forged]")

    # A vote changes the score without a reload.
    score = lambda: int(css(a, f'article[data-post="{post_id}"] [data-score="{post_id}"]')[0].text)
    before = score()
    css(a, f'article[data-post="{post_id}"] button.up')[0].click()
    wait(a, "the score to go up", lambda: score() == before + 1)
    shot(a, "post")

    # The feed shows the post (read fresh: the page wrote moments ago).
    go(a, "#/feed/new")
    wait(a, "the post in the feed", lambda: h1(a) == "Your feed" and css(a, f'article[data-post="{post_id}"]'))

    # A DM from a second browser arrives live.
    b = browser()
    try:
        register(b, bob)
        go(b, f"#/u/{alice}")
        wait(b, "alice's page", lambda: h1(b) == f"u/{alice}")
        submit(b, f"Message to {alice}", body="hello alice, live from bob")
        wait(b, "sent", lambda: "Sent to" in status(b))
        wait(a, "the live DM", lambda: "New message from " + bob in status(a))
        wait(a, "the unread badge", lambda: a.find_element(By.ID, "unread").text == "1")
        go(a, "#/messages")
        wait(a, "the inbox", lambda: css(a, "article[data-dm]"))
        shot(a, "messages")
        submit(a, f"Reply to {bob}", body="hi bob")
        wait(b, "the live reply", lambda: "New message from " + alice in status(b))
        go(b, f"#/r/{sub}")
        wait(b, "the subreddit for bob", lambda: h1(b) == f"r/{sub}")
        shot(b, "subreddit")
    finally:
        b.quit()

    go(a, f"#/u/{alice}")
    wait(a, "alice's karma", lambda: (go(a, f"#/u/{alice}?t={time.time()}") or True)
         and css(a, "[data-karma]") and int(css(a, "[data-karma]")[0].get_attribute("data-karma")) >= 1)
    shot(a, "user")
    go(a, "#/")
    wait(a, "the front page", lambda: h1(a) == "Subreddits" and css(a, "ul.subs"))
    shot(a, "front")
    go(a, "#/stats")
    wait(a, "stats", lambda: h1(a) == "Stats" and css(a, "tbody tr"))
    shot(a, "stats")

    # Export the key, log out, and log in again with it from a fresh browser.
    go(a, "#/account")
    wait(a, "the export button", lambda: css(a, "#export"))[0].click()
    key = wait(a, "the exported key", lambda: a.find_element(By.ID, "exported").get_attribute("value"))
    assert len(key) == 64, key
    print(f"KEY {alice} {key}", flush=True)
    a.find_element(By.ID, "logout").click()
    wait(a, "logged out", lambda: a.find_element(By.ID, "me").text == "Log in / register")
finally:
    a.quit()

c = browser(390, 844)  # a phone's width
try:
    go(c, "#/login")
    submit(c, "Import a key", username=alice, secret="00" * 32)
    wait(c, "a wrong key refused", lambda: "not" in alert(c) and "registered key" in alert(c))
    submit(c, "Import a key", username=alice, secret=key)
    wait(c, "alice again", lambda: c.find_element(By.ID, "me").text == f"u/{alice}")
    go(c, f"#/r/{sub}/post/{post_id}")
    wait(c, "the post on a phone", lambda: h1(c) == "Hello from the browser" and css(c, "details[data-depth='2']"))
    shot(c, "post-phone")
    go(c, "#/login")
    wait(c, "the login page", lambda: h1(c) == "Log in or register")
finally:
    c.quit()
print("ok")
