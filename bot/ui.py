"""The Gradio web chat: one conversation per browser session, answers with their cited passages,
and the named API endpoint `ask` returning the answer object."""

from __future__ import annotations

import html
import uuid

import gradio as gr

from bot.answer import Answer
from bot.conversation import CaseBot, QuestionError
from bot.settings import Settings

EXAMPLES = [
    "Lung fibrosis keeps progressing despite cyclophosphamide: what has been tried?",
    "Raynaud's and PAH not responding to ERAs: what was used next?",
    "Renal crisis not responding to ACE inhibitors: options?",
]


def as_text(value: str) -> str:
    """Questions and case text are shown as text: any HTML in them is escaped, never rendered."""
    return html.escape(value, quote=False)


def answer_markdown(answer: Answer) -> str:
    """The answer followed by its own sources, so citations stay attached to the answer they belong to."""
    parts = [as_text(answer.answer)]
    if answer.standalone_question != answer.question:
        parts.insert(0, f"_Understood as: {as_text(answer.standalone_question)}_\n")
    if answer.citations:
        parts.append("\n**Sources**")
        for citation in answer.citations:
            quotes = "".join(f"\n  > {as_text(p)}" for p in citation.passages)
            parts.append(f"- `[{citation.case_id}]` {as_text(citation.title)} ({as_text(citation.source)}){quotes}")
    parts.extend(f"\n_Warning: {as_text(w)}_" for w in answer.warnings)
    return "\n".join(parts)


def build(bot: CaseBot) -> gr.Blocks:
    with gr.Blocks(title="casebot: resistant SSc case review") as demo:
        gr.Markdown("# casebot\nAnswers come only from the case library and cite their cases.")
        conversation = gr.State(lambda: uuid.uuid4().hex)
        chatbot = gr.Chatbot(label="Case review", height=520)
        question = gr.Textbox(placeholder="Ask about the case library…", show_label=False, submit_btn=True)
        gr.Examples(EXAMPLES, inputs=question)
        clear = gr.Button("Clear chat")

        def respond(message: str, history: list, conversation_id: str):
            history = list(history or [])
            try:
                reply = answer_markdown(bot.ask(message, conversation_id))
            except QuestionError as error:
                reply = f"_{as_text(str(error))}_"
            history += [{"role": "user", "content": as_text(message)}, {"role": "assistant", "content": reply}]
            return history, ""

        def restart(conversation_id: str):
            bot.forget(conversation_id)
            return [], uuid.uuid4().hex

        question.submit(respond, [question, chatbot, conversation], [chatbot, question], api_visibility="private")
        clear.click(restart, [conversation], [chatbot, conversation], api_visibility="private")

        def ask(question: str, conversation_id: str = "api") -> dict:
            """The answer object of SPEC section 4 for `question` within conversation `conversation_id`."""
            return bot.ask(question, f"api:{conversation_id}").model_dump()

        gr.api(ask, api_name="ask")
    return demo


def serve(settings: Settings) -> None:
    bot = CaseBot(settings)
    build(bot).launch(server_name=settings.host, server_port=settings.port, share=False)
