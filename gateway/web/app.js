// reddit-nats in the browser: plain ES module on the gateway's JSON API
// (/api/v1, see /docs). The user's Ed25519 key is made and kept here (WebCrypto,
// stored in IndexedDB); the server only ever sees the public key and
// signatures. Every user-supplied text is put in the page as text, never HTML.

const API = "/api/v1";
const main = document.getElementById("main");
const alertBox = document.getElementById("alert");
const statusBox = document.getElementById("status");
const enc = new TextEncoder();

// ---------- small helpers ----------

/** Builds an element: h("a", {href: "#/"}, "text", child, ...). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}
const hex = (bytes) => [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");
function unhex(s) {
  if (!/^([0-9a-fA-F]{2})*$/.test(s)) throw new Error("not hexadecimal");
  return new Uint8Array(s.match(/../g)?.map((b) => parseInt(b, 16)) ?? []);
}
const ago = (ms) => {
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(ms).toISOString().slice(0, 10);
};
function showError(message) {
  alertBox.textContent = message;
  alertBox.hidden = false;
}
function clearMessages() {
  alertBox.hidden = true;
  alertBox.textContent = "";
}
function say(message) {
  statusBox.textContent = message;
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// ---------- session and keys ----------

let session = JSON.parse(localStorage.getItem("reddit-session") || "null");
if (session && session.expires_at < Date.now() + 60_000) session = null;
function setSession(s) {
  session = s;
  if (s) localStorage.setItem("reddit-session", JSON.stringify(s));
  else localStorage.removeItem("reddit-session");
  renderNav();
  startLive();
}

function db() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open("reddit-nats", 1);
    req.onupgradeneeded = () => req.result.createObjectStore("keys", { keyPath: "user" });
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}
async function store(mode, f) {
  const d = await db();
  return new Promise((resolve, reject) => {
    const tx = d.transaction("keys", mode);
    const req = f(tx.objectStore("keys"));
    tx.oncomplete = () => resolve(req.result);
    tx.onerror = () => reject(tx.error);
  });
}
const saveKey = (user, key) => store("readwrite", (s) => s.put({ user: user.toLowerCase(), ...key }));
const loadKey = (user) => store("readonly", (s) => s.get(user.toLowerCase()));

/** The PKCS#8 prefix of an Ed25519 private key; the 32-byte secret follows. */
const PKCS8_PREFIX = unhex("302e020100300506032b657004220420");

async function publicHex(privateKey) {
  const jwk = await crypto.subtle.exportKey("jwk", privateKey);
  const b64 = jwk.x.replace(/-/g, "+").replace(/_/g, "/");
  return hex(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
}
/** The secret as 64 hex digits: the CLI's key file (`users/<name>.key`). */
async function exportSecret(privateKey) {
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", privateKey));
  return hex(pkcs8.slice(pkcs8.length - 32));
}
async function importSecret(secretHex) {
  const secret = unhex(secretHex.trim());
  if (secret.length !== 32) throw new Error("a key is 64 hexadecimal digits (the CLI's .key file)");
  const pkcs8 = new Uint8Array([...PKCS8_PREFIX, ...secret]);
  return crypto.subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, true, ["sign"]);
}
async function sign(privateKey, text) {
  return hex(await crypto.subtle.sign({ name: "Ed25519" }, privateKey, enc.encode(text)));
}

// ---------- the API ----------

/**
 * When this page last wrote something (ms): a feed read soon after asks for
 * `fresh`, so that the user's own posts and votes show at once instead of
 * after the engine's feed cache time (`--feed-cache-ms`).
 */
let lastWrite = 0;
const FRESH_AFTER_WRITE_MS = 10_000;

async function api(method, path, body, { auth = false, key } = {}) {
  if (method !== "GET") lastWrite = Date.now();
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (auth) {
    if (!session) throw new ApiError(401, "unauthenticated", "Log in first.");
    headers.authorization = `Bearer ${session.token}`;
  }
  if (key) headers["idempotency-key"] = key;
  let res;
  try {
    res = await fetch(API + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, "unavailable", `The gateway cannot be reached (${e.message}).`);
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    if (res.status === 401 && auth) {
      setSession(null);
      throw new ApiError(401, "unauthenticated", "Your session has ended; log in again.");
    }
    throw new ApiError(res.status, data?.code ?? "error", data?.message ?? `${res.status} ${res.statusText}`);
  }
  return data;
}
/** A write, retried once with the same idempotency key if the gateway is unavailable. */
async function write(method, path, body) {
  const key = crypto.randomUUID();
  try {
    return await api(method, path, body, { auth: true, key });
  } catch (e) {
    if (e.status === 503 || e.status === 0) return api(method, path, body, { auth: true, key });
    throw e;
  }
}

async function login(username) {
  const stored = await loadKey(username);
  if (!stored) throw new Error(`This browser has no key for ${username}: register, or import the key.`);
  const { challenge } = await api("POST", "/auth/challenge", { username });
  const message = `reddit-login-v1\n${username.toLowerCase()}\n${challenge}`;
  const signature = await sign(stored.privateKey, message);
  const reply = await api("POST", "/auth/login", { username, challenge, signature });
  setSession({ username: reply.username, token: reply.token, expires_at: reply.expires_at });
  say(`Logged in as ${reply.username}.`);
}

// ---------- signatures ----------

const publicKeys = new Map();
function authorKey(author) {
  const k = author.toLowerCase();
  if (!publicKeys.has(k)) {
    publicKeys.set(
      k,
      api("GET", `/users/${encodeURIComponent(author)}`).then((u) =>
        crypto.subtle.importKey("raw", unhex(u.public_key), { name: "Ed25519" }, false, ["verify"]),
      ),
    );
  }
  return publicKeys.get(k);
}
function signedBytes(kind, item) {
  if (kind === "post") {
    const repost = item.repost_of ? `${item.repost_of.subreddit.toLowerCase()}/${item.repost_of.id}` : "-";
    return `reddit-post-v1\n${item.author.toLowerCase()}\n${item.subreddit.toLowerCase()}\n${repost}\n${item.title}\n${item.body}`;
  }
  return `reddit-comment-v1\n${item.author.toLowerCase()}\n${item.subreddit.toLowerCase()}\n${item.post_id}\n${item.parent_id ?? "-"}\n${item.body}`;
}
/** A mark that fills in once the signature is checked in the browser. */
function signatureMark(kind, item) {
  if (!item.signature) return h("span", { class: "meta" }, "unsigned");
  const mark = h("span", { class: "meta", "data-signature": "checking" }, "checking signature…");
  authorKey(item.author)
    .then((key) => crypto.subtle.verify({ name: "Ed25519" }, key, unhex(item.signature), enc.encode(signedBytes(kind, item))))
    .then((ok) => {
      mark.className = ok ? "verified" : "forged";
      mark.dataset.signature = ok ? "verified" : "forged";
      mark.textContent = ok ? `✔ signed by ${item.author}` : "✘ signature does not verify";
    })
    .catch(() => {
      mark.dataset.signature = "unknown";
      mark.textContent = "signature not checked";
    });
  return mark;
}

// ---------- pieces of pages ----------

const myVotes = new Map(); // id -> 1 | -1 (this tab's votes)

function voteBox(kind, item) {
  const score = h("span", { class: "score", "aria-label": "score", "data-score": item.id }, item.score);
  const button = (value, label, cls, text) =>
    h(
      "button",
      {
        class: cls,
        "aria-label": label,
        "aria-pressed": String(myVotes.get(item.id) === value),
        onclick: async (ev) => {
          clearMessages();
          const next = myVotes.get(item.id) === value ? 0 : value;
          try {
            const r = await write("POST", "/vote", { subreddit: item.subreddit, target: kind, id: item.id, value: next });
            myVotes.set(item.id, r.value);
            score.textContent = r.score;
            for (const b of ev.currentTarget.parentElement.querySelectorAll("button")) b.setAttribute("aria-pressed", "false");
            if (r.value !== 0) ev.currentTarget.setAttribute("aria-pressed", "true");
          } catch (e) {
            showError(`Vote not counted: ${e.message}`);
          }
        },
      },
      text,
    );
  // The arrows are drawn by the stylesheet; the labels say what they do.
  return h("div", { class: "votes" }, button(1, "Upvote", "up", ""), score, button(-1, "Downvote", "down", ""));
}

function postCard(p, { full = false } = {}) {
  const link = `#/r/${p.subreddit}/post/${p.id}`;
  const body = full ? p.body : p.body.length > 280 ? p.body.slice(0, 280) + "…" : p.body;
  return h(
    "article",
    { class: "card post", "data-post": p.id },
    voteBox("post", p),
    h(
      "div",
      {},
      full ? h("h1", {}, p.title) : h("h2", {}, h("a", { href: link }, p.title)),
      h(
        "div",
        { class: "meta" },
        h("a", { href: `#/r/${p.subreddit}` }, `r/${p.subreddit}`),
        " · by ",
        h("a", { href: `#/u/${p.author}` }, `u/${p.author}`),
        ` · ${ago(p.created_at)} · `,
        h("a", { href: link }, `${p.comments} comments`),
        " · ",
        signatureMark("post", p),
        p.repost_of ? [" · repost of ", h("a", { href: `#/r/${p.repost_of.subreddit}/post/${p.repost_of.id}` }, "the original")] : null,
      ),
      body ? h("p", { class: "body" }, body) : null,
    ),
  );
}

function postList(posts, emptyText) {
  if (!posts.length) return h("p", {}, emptyText);
  return h("div", { class: "posts" }, posts.map((p) => postCard(p)));
}

function form(fields, submitText, onsubmit, attrs = {}) {
  const f = h("form", { class: "stack", ...attrs }, fields, h("div", {}, h("button", { type: "submit" }, submitText)));
  f.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearMessages();
    const button = f.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await onsubmit(new FormData(f), f);
    } catch (e) {
      showError(e.message);
    } finally {
      button.disabled = false;
    }
  });
  return f;
}
let fieldId = 0;
function field(label, name, attrs = {}, multiline = false) {
  const id = `f${++fieldId}`;
  return h("div", {}, h("label", { for: id }, label), h(multiline ? "textarea" : "input", { id, name, ...attrs }));
}

function tabs(base, current, names, query = "") {
  return h(
    "nav",
    { class: "tabs", "aria-label": "Sort" },
    names.map((n) => h("a", { href: `${base}/${n}${query}`, "aria-current": n === current ? "page" : null }, n)),
  );
}

// ---------- pages ----------

async function frontPage() {
  const subs = (await api("GET", "/subreddits?limit=100")).subreddits;
  const me = session ? await api("GET", `/users/${session.username}`) : null;
  const joined = new Set((me?.joined ?? []).map((s) => s.toLowerCase()));
  // Popular posts: the hot posts of the five biggest subreddits, hottest first.
  const pages = await Promise.all(subs.slice(0, 5).map((s) => api("GET", `/r/${s.name}/hot?limit=10`).catch(() => ({ posts: [] }))));
  const popular = pages
    .flatMap((p) => p.posts)
    .sort((x, y) => y.score - x.score || y.created_at - x.created_at)
    .slice(0, 10);
  return [
    h("h1", {}, "Subreddits"),
    session
      ? form(
          [field("Name (3–21 letters, digits or _)", "name", { required: true, pattern: "[A-Za-z0-9_]{3,21}" }), field("Description", "description", { maxlength: 500 })],
          "Create subreddit",
          async (data) => {
            const name = data.get("name");
            await write("POST", "/subreddits", { name, description: data.get("description") });
            await write("POST", `/r/${name}/join`);
            say(`Created r/${name}; you are its first member.`);
            location.hash = `#/r/${name}`;
          },
          { "aria-label": "Create a subreddit" },
        )
      : h("p", {}, h("a", { href: "#/login" }, "Log in or register"), " to create and join subreddits."),
    subs.length
      ? h(
          "ul",
          { class: "subs" },
          subs.map((s) =>
            h(
              "li",
              { class: "card" },
              h("a", { href: `#/r/${s.name}` }, h("strong", {}, `r/${s.name}`)),
              ` · ${s.members} member${s.members === 1 ? "" : "s"} · ${s.posts} post${s.posts === 1 ? "" : "s"}`,
              s.description ? h("div", { class: "meta" }, s.description) : null,
              session ? joinButton(s.name, joined.has(s.name.toLowerCase())) : null,
            ),
          ),
        )
      : h("p", {}, "No subreddits yet."),
    popular.length ? [h("h2", {}, "Popular posts"), postList(popular, "")] : null,
  ];
}

function joinButton(name, member) {
  const b = h("button", { class: "plain", "data-join": name }, member ? "Leave" : "Join");
  b.addEventListener("click", async () => {
    clearMessages();
    try {
      const r = await write("POST", `/r/${name}/${member ? "leave" : "join"}`);
      member = r.member;
      b.textContent = member ? "Leave" : "Join";
      say(member ? `Joined r/${name}.` : `Left r/${name}.`);
      startLive();
    } catch (e) {
      showError(e.message);
    }
  });
  return b;
}

async function subredditPage(name, sort = "hot", query) {
  const sub = await api("GET", `/r/${name}`);
  const after = query.get("after");
  const page = await api("GET", `/r/${name}/${sort}?limit=25${after ? `&after=${encodeURIComponent(after)}` : ""}`);
  const me = session ? await api("GET", `/users/${session.username}`) : null;
  const member = (me?.joined ?? []).some((s) => s.toLowerCase() === sub.name.toLowerCase());
  return [
    h("h1", {}, `r/${sub.name}`),
    h("p", { class: "meta" }, [sub.description, `${sub.members} member${sub.members === 1 ? "" : "s"}`, `${sub.posts} posts`, `created by u/${sub.creator}`].filter(Boolean).join(" · ")),
    session ? joinButton(sub.name, member) : null,
    session
      ? form(
          [field("Title", "title", { required: true, maxlength: 300 }), field("Text", "body", { maxlength: 40000 }, true)],
          "Post (signed with your key)",
          async (data, f) => {
            const title = data.get("title");
            const body = data.get("body");
            if (/[\r\n]/.test(title)) throw new Error("A title is one line.");
            const key = await loadKey(session.username);
            if (!key) throw new Error("This browser has no key for you; import it on the account page.");
            const signature = await sign(key.privateKey, `reddit-post-v1\n${session.username.toLowerCase()}\n${sub.name.toLowerCase()}\n-\n${title}\n${body}`);
            const post = await write("POST", `/r/${sub.name}/posts`, { title, body, signature });
            f.reset();
            say("Posted.");
            location.hash = `#/r/${sub.name}/post/${post.id}`;
          },
          { "aria-label": "New post" },
        )
      : null,
    tabs(`#/r/${sub.name}`, sort, ["hot", "new", "top", "controversial"]),
    postList(page.posts, "No posts yet."),
    page.next_cursor ? h("a", { href: `#/r/${sub.name}/${sort}?after=${encodeURIComponent(page.next_cursor)}` }, "Next page →") : null,
  ];
}

function commentNode(c, post) {
  const replyForm = () =>
    form(
      [field(`Reply to ${c.author}`, "body", { required: true, maxlength: 10000 }, true)],
      "Reply",
      async (data) => {
        await comment(post, data.get("body"), c.id);
      },
      { "aria-label": `Reply to ${c.author}` },
    );
  const actions = h("div", { class: "row" });
  if (session) {
    const b = h("button", { class: "plain", "aria-expanded": "false" }, "Reply");
    b.addEventListener("click", () => {
      const open = b.getAttribute("aria-expanded") === "true";
      b.setAttribute("aria-expanded", String(!open));
      const existing = actions.nextElementSibling?.matches("form") ? actions.nextElementSibling : null;
      if (open) existing?.remove();
      else {
        const f = replyForm();
        actions.after(f);
        f.querySelector("textarea").focus();
      }
    });
    actions.append(b);
  }
  return h(
    "details",
    { open: true, class: "comment", "data-comment": c.id, "data-depth": c.depth },
    h("summary", {}, `u/${c.author} · ${c.score} points · ${ago(c.created_at)}${c.replies.length ? ` · ${c.replies.length} repl${c.replies.length > 1 ? "ies" : "y"}` : ""}`),
    h("div", { class: "post" }, voteBox("comment", c), h("div", {}, h("p", { class: "body" }, c.body), h("div", { class: "meta" }, signatureMark("comment", c)), actions)),
    c.replies.map((r) => commentNode(r, post)),
  );
}

async function comment(post, body, parentId) {
  const key = await loadKey(session.username);
  if (!key) throw new Error("This browser has no key for you; import it on the account page.");
  const signature = await sign(
    key.privateKey,
    `reddit-comment-v1\n${session.username.toLowerCase()}\n${post.subreddit.toLowerCase()}\n${post.id}\n${parentId ?? "-"}\n${body}`,
  );
  await write("POST", `/r/${post.subreddit}/posts/${post.id}/comments`, { body, parent_id: parentId ?? null, signature });
  say("Comment added.");
  await render({ keepFocus: true });
}

async function postPage(sub, id, query) {
  const sort = query.get("sort") || "best";
  const [post, tree] = await Promise.all([
    api("GET", `/r/${sub}/posts/${id}`),
    api("GET", `/r/${sub}/posts/${id}/comments?sort=${sort}`),
  ]);
  return [
    postCard(post, { full: true }),
    session
      ? form([field("Comment", "body", { required: true, maxlength: 10000 }, true)], "Comment (signed)", async (data) => comment(post, data.get("body")), {
          "aria-label": "New comment",
        })
      : h("p", {}, h("a", { href: "#/login" }, "Log in"), " to comment and vote."),
    h("h2", {}, `${tree.total} comments`),
    h(
      "nav",
      { class: "tabs", "aria-label": "Sort comments" },
      ["best", "top", "new"].map((s) => h("a", { href: `#/r/${sub}/post/${id}?sort=${s}`, "aria-current": s === sort ? "page" : null }, s)),
    ),
    h("section", { class: "comments", "aria-label": "Comments" }, tree.comments.map((c) => commentNode(c, post))),
    tree.truncated ? h("p", { class: "meta" }, "Some comments are not shown (too many or too deep).") : null,
  ];
}

async function feedPage(sort = "hot", query) {
  const after = query.get("after");
  const fresh = Date.now() - lastWrite < FRESH_AFTER_WRITE_MS ? "&fresh=true" : "";
  const page = await api("GET", `/feed?sort=${sort}&limit=25${after ? `&after=${encodeURIComponent(after)}` : ""}${fresh}`, undefined, { auth: true });
  return [
    h("h1", {}, "Your feed"),
    tabs("#/feed", sort, ["hot", "new", "top", "controversial"]),
    postList(page.posts, "Nothing here yet: join some subreddits."),
    page.next_cursor ? h("a", { href: `#/feed/${sort}?after=${encodeURIComponent(page.next_cursor)}` }, "Next page →") : null,
  ];
}

async function userPage(name) {
  const u = await api("GET", `/users/${encodeURIComponent(name)}`);
  const dm =
    session && session.username.toLowerCase() !== u.username.toLowerCase()
      ? form(
          [field(`Message to ${u.username}`, "body", { required: true, maxlength: 10000 }, true)],
          "Send",
          async (data, f) => {
            await write("POST", "/messages", { to: u.username, body: data.get("body") });
            f.reset();
            say(`Sent to ${u.username}.`);
          },
          { "aria-label": `Message to ${u.username}` },
        )
      : null;
  return [
    h("h1", {}, `u/${u.username}`),
    h(
      "dl",
      {},
      h("dt", {}, "Karma"),
      h("dd", { "data-karma": u.post_karma + u.comment_karma }, `${u.post_karma + u.comment_karma} (${u.post_karma} from posts, ${u.comment_karma} from comments)`),
      h("dt", {}, "Joined"),
      h("dd", {}, u.joined.length ? u.joined.map((s, i) => [i ? ", " : "", h("a", { href: `#/r/${s}` }, `r/${s}`)]) : "no subreddits"),
      h("dt", {}, "Member since"),
      h("dd", {}, new Date(u.created_at).toISOString().slice(0, 10)),
      h("dt", {}, "Public key"),
      h("dd", {}, h("code", { class: "body" }, u.public_key)),
    ),
    dm,
  ];
}

async function messagesPage(query) {
  const folder = query.get("folder") === "sent" ? "sent" : "inbox";
  const after = query.get("after");
  const page = await api("GET", `/messages?folder=${folder}&limit=50${after ? `&after=${encodeURIComponent(after)}` : ""}`, undefined, { auth: true });
  const unread = page.messages.filter((m) => folder === "inbox" && !m.read).map((m) => m.id);
  if (unread.length) {
    const r = await write("POST", "/messages/read", { ids: unread });
    setUnread(r.unread);
  } else if (folder === "inbox") setUnread(page.unread);
  return [
    h("h1", {}, "Messages"),
    h(
      "nav",
      { class: "tabs", "aria-label": "Folder" },
      h("a", { href: "#/messages", "aria-current": folder === "inbox" ? "page" : null }, "Inbox"),
      h("a", { href: "#/messages?folder=sent", "aria-current": folder === "sent" ? "page" : null }, "Sent"),
    ),
    form(
      [field("To (username)", "to", { required: true, pattern: "[A-Za-z0-9_\\-]{3,20}" }), field("Message", "body", { required: true, maxlength: 10000 }, true)],
      "Send",
      async (data, f) => {
        await write("POST", "/messages", { to: data.get("to"), body: data.get("body") });
        f.reset();
        say(`Sent to ${data.get("to")}.`);
      },
      { "aria-label": "New message" },
    ),
    page.messages.length
      ? page.messages.map((m) =>
          h(
            "article",
            { class: `card${unread.includes(m.id) ? " unread" : ""}`, "data-dm": m.id },
            h("div", { class: "meta" }, folder === "inbox" ? ["from ", h("a", { href: `#/u/${m.from}` }, `u/${m.from}`)] : ["to ", h("a", { href: `#/u/${m.to}` }, `u/${m.to}`)], ` · ${ago(m.created_at)}`, unread.includes(m.id) ? " · new" : ""),
            h("p", { class: "body" }, m.body),
            folder === "inbox"
              ? form(
                  [field(`Reply to ${m.from}`, "body", { required: true, maxlength: 10000 })],
                  "Reply",
                  async (data, f) => {
                    await write("POST", `/messages/${m.id}/reply`, { body: data.get("body") });
                    f.reset();
                    say(`Replied to ${m.from}.`);
                  },
                  { "aria-label": `Reply to ${m.from}` },
                )
              : null,
          ),
        )
      : h("p", {}, folder === "inbox" ? "No messages." : "Nothing sent yet."),
    page.next_cursor ? h("a", { href: `#/messages?folder=${folder}&after=${encodeURIComponent(page.next_cursor)}` }, "Older →") : null,
  ];
}

async function statsPage() {
  const shards = await api("GET", "/stats");
  const cols = ["shard", "users", "subreddits", "posts", "comments", "votes", "dms", "requests", "errors", "queue_depth"];
  return [
    h("h1", {}, "Stats"),
    h(
      "div",
      { class: "wrap" },
      h("table", {}, h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c.replace("_", " "))))), h("tbody", {}, shards.map((s) => h("tr", {}, cols.map((c) => h("td", {}, s[c])))))),
    ),
  ];
}

function loginPage() {
  const name = { required: true, pattern: "[A-Za-z0-9_\\-]{3,20}", autocomplete: "username", title: "3–20 of A-Z a-z 0-9 _ -" };
  return [
    h("h1", {}, "Log in or register"),
    h("p", {}, "Your key is made in this browser and never leaves it. Export it from your account page to use the same account elsewhere (the command-line client reads the same format)."),
    h("h2", {}, "Register"),
    form([field("Username", "username", name)], "Register", async (data) => {
      const username = data.get("username");
      const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
      const public_key = hex(await crypto.subtle.exportKey("raw", pair.publicKey));
      await api("POST", "/users", { username, public_key });
      await saveKey(username, { privateKey: pair.privateKey, public_key });
      await login(username);
      location.hash = "#/";
    }, { "aria-label": "Register" }),
    h("h2", {}, "Log in"),
    form([field("Username", "username", name)], "Log in", async (data) => {
      await login(data.get("username"));
      location.hash = "#/";
    }, { "aria-label": "Log in" }),
    h("h2", {}, "Import a key"),
    form(
      [field("Username", "username", name), field("Key (64 hexadecimal digits, as exported or from the CLI's users/NAME.key)", "secret", { required: true, autocomplete: "off", spellcheck: "false" }, true)],
      "Import and log in",
      async (data) => {
        const username = data.get("username");
        const privateKey = await importSecret(data.get("secret"));
        const public_key = await publicHex(privateKey);
        const user = await api("GET", `/users/${encodeURIComponent(username)}`);
        if (user.public_key !== public_key) throw new Error(`That key is not ${user.username}'s registered key.`);
        await saveKey(username, { privateKey, public_key });
        await login(username);
        location.hash = "#/";
      },
      { "aria-label": "Import a key" },
    ),
  ];
}

async function accountPage() {
  if (!session) return loginPage();
  const stored = await loadKey(session.username);
  const out = h("textarea", { id: "exported", readonly: true, "aria-label": "Your exported key", hidden: true });
  return [
    h("h1", {}, `Account: ${session.username}`),
    h("p", {}, h("a", { href: `#/u/${session.username}` }, "Your profile and karma")),
    h("h2", {}, "Export your key"),
    h("p", {}, "Anyone with this key can act as you. Keep it like a password; the CLI uses it as users/NAME.key."),
    stored
      ? h("button", {
          class: "plain",
          id: "export",
          onclick: async () => {
            out.value = await exportSecret(stored.privateKey);
            out.hidden = false;
            out.focus();
            out.select();
          },
        }, "Show my key")
      : h("p", {}, "This browser has no key for you."),
    out,
    h("h2", {}, "Log out"),
    h("button", { id: "logout", onclick: () => { setSession(null); say("Logged out."); location.hash = "#/"; } }, "Log out"),
  ];
}

// ---------- live events (SSE through fetch, with the token header) ----------

let live = null;
async function startLive() {
  live?.abort();
  document.body.dataset.live = "";
  if (!session) return;
  const controller = new AbortController();
  live = controller;
  let subs = [];
  try {
    subs = (await api("GET", `/users/${session.username}`)).joined.slice(0, 50);
  } catch {
    subs = [];
  }
  try {
    const res = await fetch(`${API}/events${subs.length ? `?sub=${subs.join(",")}` : ""}`, {
      headers: { authorization: `Bearer ${session.token}` },
      signal: controller.signal,
    });
    if (!res.ok) throw new Error(`events: ${res.status}`);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let event = "message";
        let data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        onEvent(event, data ? JSON.parse(data) : null);
      }
    }
  } catch (e) {
    if (controller.signal.aborted) return;
  }
  if (live === controller && session) setTimeout(() => live === controller && startLive(), 2000);
}

function setUnread(n) {
  const badge = document.getElementById("unread");
  badge.textContent = n;
  badge.hidden = !n;
  badge.setAttribute("aria-label", `${n} unread messages`);
}

function onEvent(kind, data) {
  const route = location.hash;
  if (kind === "ready") {
    document.body.dataset.live = "ready";
    api("GET", "/messages?folder=inbox&limit=1", undefined, { auth: true }).then((p) => setUnread(p.unread)).catch(() => {});
  } else if (kind === "dm") {
    say(`New message from ${data.dm.from}: “${data.dm.body.slice(0, 80)}”`);
    const badge = document.getElementById("unread");
    setUnread(Number(badge.textContent || 0) + 1);
    if (route.startsWith("#/messages")) render({ keepFocus: true });
  } else if (kind === "reply") {
    const c = data.comment;
    say(`${c.author} replied: “${c.body.slice(0, 80)}”`);
    if (route.startsWith(`#/r/${c.subreddit}/post/${c.post_id}`)) render({ keepFocus: true });
  } else if (kind === "post") {
    const p = data.post;
    say(`New post in r/${p.subreddit}: “${p.title.slice(0, 80)}”`);
    if (route === `#/r/${p.subreddit}` || route.startsWith(`#/r/${p.subreddit}/new`) || route.startsWith(`#/r/${p.subreddit}/hot`)) render({ keepFocus: true });
  }
}

// ---------- navigation ----------

function renderNav() {
  const me = document.getElementById("me");
  me.textContent = session ? `u/${session.username}` : "Log in / register";
  me.href = session ? "#/account" : "#/login";
  for (const a of document.querySelectorAll("[data-auth]")) a.hidden = !session;
  if (!session) setUnread(0);
}

let rendering = 0;
async function render({ keepFocus = false } = {}) {
  const ticket = ++rendering;
  const [path, qs] = location.hash.replace(/^#/, "").split("?");
  const query = new URLSearchParams(qs || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (!keepFocus) clearMessages();
  let content;
  try {
    if (parts.length === 0) content = await frontPage();
    else if (parts[0] === "r" && parts[2] === "post" && parts[3]) content = await postPage(parts[1], parts[3], query);
    else if (parts[0] === "r" && parts[1]) content = await subredditPage(parts[1], parts[2] || "hot", query);
    else if (parts[0] === "feed") content = session ? await feedPage(parts[1] || "hot", query) : loginPage();
    else if (parts[0] === "u" && parts[1]) content = await userPage(parts[1]);
    else if (parts[0] === "messages") content = session ? await messagesPage(query) : loginPage();
    else if (parts[0] === "stats") content = await statsPage();
    else if (parts[0] === "login") content = loginPage();
    else if (parts[0] === "account") content = await accountPage();
    else content = [h("h1", {}, "Not found"), h("p", {}, "No such page. "), h("a", { href: "#/" }, "Front page")];
  } catch (e) {
    content = [h("h1", {}, e.status === 404 ? "Not found" : "Something went wrong"), h("p", { class: "error" }, e.message), h("a", { href: "#/" }, "Front page")];
  }
  if (ticket !== rendering) return;
  main.replaceChildren(...[content].flat(Infinity).filter(Boolean));
  const title = main.querySelector("h1");
  document.title = title ? `${title.textContent} · reddit-nats` : "reddit-nats";
  if (!keepFocus) main.focus();
  main.dataset.ready = String(ticket);
}

window.addEventListener("hashchange", () => render());
renderNav();
startLive();
render();
