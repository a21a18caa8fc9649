"""The clinicians' web app (Gradio), one module per tab (bot/web/chat.py, library.py, pathways.py, similar.py,
teach.py) over the rendering they share (bot/web/render.py); this module puts the page together and serves it
with the plain HTTP API (bot/api.py) on the same server.

The page is served at once: while the bot is made behind it (bot/web/startup.py: on a first start the index
is built, 50-80 s for the shipped library) a progress bar heads the page, questions are refused politely with
how far the indexing is, and the library's values (filters, therapies, cases to teach) arrive once it is done."""

from __future__ import annotations

import html
import math
import signal
import sys
import threading
import time
from collections import OrderedDict

import gradio as gr
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from bot.answer import prompt
from bot.api import ApiError, CaseBotApi
from bot.settings import Settings
from bot.web.chat import EXAMPLES, build_chat_tab
from bot.web.library import build_library_tab
from bot.web.pathways import build_pathways_tab
from bot.web.similar import build_similar_tab
from bot.web.startup import FAILED, INDEXING, READY, NotReady, Startup
from bot.web.teach import build_teach_tab

API_PREFIXES = ("/v1/", "/api/")  # the HTTP API's paths (bot/api.py); Gradio's own are under /gradio_api/
STATUS_PATH = "/api/status"
POLL_S = 1.0  # how often an open page asks how far the start is, until it is over
RETRY_AFTER_S = 10
LOGIN_PATHS = ("/login", "/login/")  # Gradio's login form posts here (CASEBOT_AUTH)
# Wrong passwords in a row from one address before its logins are refused for LOCKOUT_S: a person mistyping is not
# stopped, a script trying passwords (300 in 0.6 s before) gets ten tries per five minutes.
MAX_LOGIN_FAILURES = 10
LOCKOUT_S = 300
MAX_LOGIN_CLIENTS = 10_000  # addresses whose failures are remembered, the least recent forgotten first
# System fonts: the theme's bundled Source Sans Pro SemiBold drew a bold capital A or B as a small capital
# ("ᴀCE"), and Gradio quotes generic names like system-ui, which then match no font at all.
SANS = ("Segoe UI", "Roboto", "Helvetica Neue", "Noto Sans", "Liberation Sans", "DejaVu Sans", "Arial", "sans-serif")
MONO = ("Consolas", "SF Mono", "Menlo", "Liberation Mono", "DejaVu Sans Mono", "monospace")
STYLE = """
#intro h1 { font-size: 1.5em; margin: 0 0 .2em; }
#intro p { margin: 0; font-size: .9em; }
.cite-chip { display: inline-block; padding: 0 .45em; margin: 0 .1em; border-radius: .8em; font-size: .85em;
  font-family: var(--font-mono); background: var(--color-accent-soft); color: var(--body-text-color);
  border: 1px solid var(--color-accent); white-space: nowrap; }
a.cite-num { position: relative; padding: 0 .3em; margin: 0 .05em; font-family: inherit; font-weight: 600;
  text-decoration: none; cursor: pointer; }
a.cite-num:hover { background: var(--color-accent); color: var(--button-primary-text-color, #fff); }
a.cite-num:focus-visible { outline: 2px solid var(--color-accent); outline-offset: 1px; }
a.cite-num:focus-visible::after { content: attr(title); position: absolute; left: 0; top: 1.6em; z-index: 20;
  width: max-content; max-width: 16em; padding: .3em .5em; border-radius: .3em; font-weight: normal;
  white-space: normal; background: var(--neutral-800, #27272a); color: var(--neutral-50, #fafafa); }
#chat table { display: block; max-width: 100%; overflow-x: auto; font-size: .85em; }
#chat th, #chat td { word-break: normal; overflow-wrap: normal; hyphens: none; }
#chat th { white-space: nowrap; }
#chat td:first-child { min-width: 8em; }
#pathway-table table, #similar-results table { display: block; max-width: 100%; overflow-x: auto; font-size: .85em; }
#pathway-table th, #pathway-table td, #similar-results th, #similar-results td {
  word-break: normal; overflow-wrap: normal; hyphens: none; }
#pathway-table th, #similar-results th { white-space: nowrap; }
#pathway-table th:first-child, #pathway-table td:first-child, #similar-results th:first-child,
#similar-results td:first-child { min-width: 10em; }
#pathway-table td:first-child, #similar-results td:first-child { white-space: nowrap; }  /* "cardioverter-defibrillator" broke at its hyphen */
#similar-results td .cite-chip { white-space: nowrap; }
.answer-note { display: block; font-style: italic; color: var(--body-text-color-subdued); }
.answer-warning { display: block; font-style: italic; color: var(--color-red-600, #b91c1c); }
.sources { max-height: 720px; overflow-y: auto; }
.sources h4 { margin: .8em 0 .2em; }
.sources .source-number { font-weight: 600; color: var(--color-accent); }
.sources .source-ref { font-size: .85em; color: var(--body-text-color-subdued); margin: 0 0 .3em;
  overflow-wrap: anywhere; }
.sources section.source { scroll-margin-top: .5em; border-radius: .3em; transition: background-color .6s; }
.sources section.source.source-shown, .cited-cases li.source-shown { background: var(--color-accent-soft); }
.cited-cases li { scroll-margin-top: .5em; transition: background-color .6s; }
.pathway-legend { display: flex; flex-wrap: wrap; gap: .3em 1.2em; list-style: none; margin: 0; padding: 0; }
.pathway-legend .swatch { display: inline-block; width: .9em; height: .9em; margin-right: .35em;
  vertical-align: -.1em; border-radius: .15em; }
.cited-cases .source-number { font-weight: 600; color: var(--color-accent); }
.cited-cases .source-ref, .teach-walk .source-ref { font-size: .85em; color: var(--body-text-color-subdued);
  overflow-wrap: anywhere; }
.sources blockquote.passage { margin: .3em 0; padding: .3em .6em; border-left: 3px solid var(--color-accent); }
.sources mark, .case mark { background: #fde68a; color: inherit; padding: 0 .1em; }
.sources .cite-chip { white-space: normal; overflow-wrap: anywhere; }
#startup { position: fixed; top: 0; left: 0; right: 0; z-index: 100; margin: 0; padding: 0; border: 0; }  /* over the title: */
#startup .startup { padding: .5em 1em; background: var(--color-accent-soft);  /* the chat keeps its room */
  border-bottom: 1px solid var(--color-accent); box-shadow: 0 2px 6px rgba(0, 0, 0, .15); }
#startup progress { width: 100%; height: .8em; accent-color: var(--color-accent); }
#startup p { margin: .2em 0 0; font-style: normal; color: var(--body-text-color); }
.case-facts th { text-align: left; padding-right: 1em; vertical-align: top; }
#teach-area.projector { --text-sm: 20px; --text-md: 24px; --text-lg: 28px; --text-xl: 34px; --text-xxl: 40px;
  --block-label-text-size: 20px; --block-title-text-size: 22px; --input-text-size: 24px;
  --button-large-text-size: 24px; --prose-text-size: 24px; }
#teach-area.projector .prose, #teach-area.projector .teach-walk { font-size: 24px; line-height: 1.45; }
@media (max-width: 640px) {  /* a phone: the question box stays on the first screen under the filters */
  #chat { height: calc(100vh - 470px) !important; min-height: 260px !important; }
}
"""
# Runs once per page. A citation number scrolls the chat's sources panel to its case as soon as the panel shows
# that answer's sources (the click also selects the answer, which brings them), or the Pathways and Teach tabs to
# the case their number names; the page itself scrolls only when the case is out of sight (a phone). A new
# question is scrolled to the top of the chat, so its answer is read from its start while it streams in below
# (the chat's own autoscroll is off: it showed the answer's end).
SCRIPT = """
() => {
  document.addEventListener('click', (event) => {
    const link = event.target.closest ? event.target.closest('a.cite-num') : null;
    if (!link) return;
    event.preventDefault();
    const id = link.getAttribute('href').slice(1);
    const until = Date.now() + 10000;
    const reveal = () => {
      const target = document.getElementById(id);
      if (!target) { if (Date.now() < until) setTimeout(reveal, 100); return; }
      const panel = target.closest('.sources');  // the chat's panel; the Pathways and Teach tabs have none
      if (panel) panel.scrollTop += target.getBoundingClientRect().top - panel.getBoundingClientRect().top;
      const top = target.getBoundingClientRect().top;
      if (top < 0 || top > window.innerHeight - 60) target.scrollIntoView({block: 'start'});
      target.focus({preventScroll: true});
      target.classList.add('source-shown');
      setTimeout(() => target.classList.remove('source-shown'), 2000);
    };
    reveal();
  }, true);

  // Until the new question reaches the top of the chat (the scroll is clamped while its answer is short) or the
  // reader scrolls the chat themselves.
  let questions = 0, pinned = false;
  const scroller = (element) => {
    for (let node = element.parentElement; node; node = node.parentElement) {
      const overflow = getComputedStyle(node).overflowY;
      if ((overflow === 'auto' || overflow === 'scroll') && node.scrollHeight > node.clientHeight) return node;
    }
    return null;
  };
  const follow = () => {
    const asked = document.querySelectorAll('#chat [data-testid="user"]');
    if (asked.length > questions) pinned = true;
    questions = asked.length;
    const last = asked[asked.length - 1], box = last && scroller(last);
    if (!pinned || !box) return;
    const gap = () => last.getBoundingClientRect().top - box.getBoundingClientRect().top - 40;  // below the label
    box.scrollTop += gap();
    if (Math.abs(gap()) < 2) pinned = false;
  };
  for (const kind of ['wheel', 'touchmove', 'keydown']) {
    document.addEventListener(kind, (event) => {
      if (event.target.closest && event.target.closest('#chat')) pinned = false;
    }, {passive: true});
  }
  const start = () => {
    const chat = document.querySelector('#chat');
    if (!chat) { setTimeout(start, 200); return; }
    new MutationObserver(follow).observe(chat, {subtree: true, childList: true, characterData: true});
  };
  start();
}
"""


def startup_html(startup: Startup) -> str:
    """The progress bar heading the page while the bot is made ("" once it is ready): how many cases are
    indexed while the index is built, an indeterminate bar while the model loads."""
    if startup.phase == READY:
        return ""
    if startup.phase == INDEXING and startup.total:
        bar = f'<progress max="{startup.total}" value="{startup.indexed}"></progress>'
    else:
        bar = "" if startup.phase == FAILED else "<progress></progress>"
    kind = "answer-warning" if startup.phase == FAILED else "answer-note"
    return (f'<div class="startup" role="status" aria-live="polite">{bar}'
            f'<p class="{kind}">{html.escape(startup.note())}</p></div>')


def build(startup: Startup) -> gr.Blocks:
    """The page over one start; `Startup.of(bot)` for a bot made already. Each session polls the start until
    it is over, then sets its `started` state, which the tabs fill their library values on."""
    note = prompt(startup.settings.prompts_dir, "educational_note.md")
    with gr.Blocks(title="casebot: resistant SSc case review", delete_cache=(3600, 86400)) as demo:
        gr.Markdown("# casebot\nCase review for treatment-resistant systemic sclerosis. Answers come only from "
                    f"the case library, and every statement cites its case. {note}", elem_id="intro")
        banner = gr.HTML(startup_html(startup), elem_id="startup")
        started = gr.State(False)
        timer = gr.Timer(POLL_S)
        with gr.Tabs():
            with gr.Tab("Chat", id="chat-tab"):
                build_chat_tab(startup, started)
            with gr.Tab("Case library", id="library-tab"):
                build_library_tab(startup, started)
            with gr.Tab("Pathways", id="pathways-tab"):
                build_pathways_tab(startup, started)
            with gr.Tab("Patients like mine", id="similar-tab"):
                build_similar_tab(startup)
            with gr.Tab("Teach", id="teach-tab"):
                build_teach_tab(startup, started)

        def poll():
            """The bar as the start is now (hidden once it is over, to give the chat its room back)."""
            ready = startup.phase == READY
            return (gr.HTML(startup_html(startup), visible=not ready), ready,
                    gr.Timer(active=not startup.ready.is_set()))

        gr.on([demo.load, timer.tick], poll, None, [banner, started, timer], show_progress="hidden",
              concurrency_limit=None, api_visibility="private")
    return demo


class ApiGate:
    """ASGI middleware in front of Gradio's app: GET /api/status answers at once (a readiness check), and the
    HTTP API of bot/api.py is made with the bot. Until then its requests wait while the bot loads, and are
    refused with 503 and how far the indexing is while the index is built."""

    def __init__(self, app: ASGIApp, startup: Startup):
        self.app, self.startup = app, startup
        self.routes: FastAPI | None = None
        self.making = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(API_PREFIXES):
            await self.app(scope, receive, send)
        elif path == STATUS_PATH:
            await JSONResponse(self.startup.status())(scope, receive, send)
        else:
            try:
                api = await run_in_threadpool(self.api)
            except NotReady as error:
                await ApiError(503, str(error), "not_ready", retry_after=RETRY_AFTER_S).response()(scope, receive, send)
            else:
                await api(scope, receive, send)

    def api(self) -> FastAPI:
        """The API over the bot, made once (waits while the bot loads; NotReady while indexing): an app of its
        own, so that FastAPI's request handling has what it needs whatever Gradio's app puts around it."""
        bot = self.startup.bot
        with self.making:
            if self.routes is None:
                self.routes = FastAPI(routes=CaseBotApi(bot, self.startup.ready).routes(), openapi_url=None)
            return self.routes


class LoginGuard:
    """ASGI middleware in front of Gradio's login: after MAX_LOGIN_FAILURES wrong passwords in a row from one
    address, its logins are refused (429, saying why and for how long) for LOCKOUT_S, the right password too.
    Gradio's own login page shows no message for that answer (it shows one for a wrong password only); a client
    of the HTTP login reads the reason in the body and the Retry-After header."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self.failures: OrderedDict[str, tuple[int, float]] = OrderedDict()  # address -> (in a row, refused until)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in LOGIN_PATHS:
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("unknown",))[0]
        _, until = self.failures.get(client, (0, 0.0))
        wait = until - time.monotonic()
        if wait > 0:
            minutes = math.ceil(wait / 60)
            await JSONResponse({"detail": f"too many wrong passwords from {client}: logins from this address are "
                                f"refused for {minutes} more minute{'s' if minutes > 1 else ''}"},
                               status_code=429, headers={"Retry-After": str(math.ceil(wait))})(scope, receive, send)
            return
        status: list[int] = []

        async def watched(message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await self.app(scope, receive, watched)
        self.record(client, failed=status[:1] == [400])  # Gradio answers a wrong password with 400

    def record(self, client: str, failed: bool) -> None:
        if not failed:
            self.failures.pop(client, None)
            return
        count, _ = self.failures.pop(client, (0, 0.0))
        count += 1
        self.failures[client] = ((0, time.monotonic() + LOCKOUT_S) if count >= MAX_LOGIN_FAILURES
                                 else (count, 0.0))
        while len(self.failures) > MAX_LOGIN_CLIENTS:
            self.failures.popitem(last=False)


def exit_on_terminate() -> None:
    """SIGTERM (systemd or docker stopping the service, `kill`) ends the process as Ctrl-C does, through its exit
    handlers, so the conversation exports are removed; by default Python dies of it without running them."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))


def serve(settings: Settings) -> None:
    """Serves the app on settings.host (127.0.0.1 unless told otherwise), never through a share link. The page
    is served first, then the bot is made on this thread (the index built first when it is empty) while the
    server answers on its own; an error making it ends the process (the server thread is a daemon)."""
    exit_on_terminate()
    startup = Startup(settings)
    demo = build(startup)
    demo.launch(server_name=settings.host, server_port=settings.port, share=False, auth=settings.credentials,
                auth_message="casebot: log in with the account your department set up.",
                max_file_size=f"{settings.max_upload_mb}mb",
                theme=gr.themes.Default(font=SANS, font_mono=MONO), css=STYLE, js=SCRIPT, prevent_thread_lock=True,
                app_kwargs={"middleware": [Middleware(ApiGate, startup=startup), Middleware(LoginGuard)]})
    startup.run(EXAMPLES[0])
    demo.block_thread()
