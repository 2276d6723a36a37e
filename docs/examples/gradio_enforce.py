"""A Gradio app that asks the edge limiter for decisions itself: a per-caller token budget
for an LLM call, the way an in-app `enforce(request)` middleware would. The limiter sits in
front of the app and answers its decision API (docs/decision-api.md).

    LIMITER_URL=http://127.0.0.1:8787 SERVICE_TOKEN=... python gradio_enforce.py [port]

The policy needs a tier for the budget, for instance
    "llm": {"limits": {"tokens": {"token_bucket": {"capacity": 1000, "refill": "1000/h"}}}}
"""
import json
import os
import sys
import urllib.request

import gradio as gr

LIMITER = os.environ["LIMITER_URL"].rstrip("/") + "/__limiter/v1/"
TOKEN = os.environ["SERVICE_TOKEN"]


def ask(call: str, body: dict) -> dict:
    request = urllib.request.Request(
        LIMITER + call,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=2) as answer:
        return json.load(answer)


def caller(request: gr.Request) -> dict:
    """The caller as the limiter names it: the address it appended to X-Forwarded-For
    (the last entry: the ones before it are whatever the client sent)."""
    forwarded = request.headers.get("x-forwarded-for", "")
    return {"ip": forwarded.split(",")[-1].strip() or request.client.host, "tier": "llm"}


def enforce(request: gr.Request, cost: int) -> dict:
    """Takes `cost` units of the caller's budget, or refuses with when to come back."""
    decision = ask("check", {**caller(request), "cost": cost})
    if not decision["allowed"]:
        raise gr.Error(f"Token budget used up: try again in {decision['retry_after']} s.")
    return decision


def answer(prompt: str, request: gr.Request) -> str:
    estimate = 4 * len(prompt) + 200  # the most this call can use
    decision = enforce(request, estimate)
    reply = prompt[::-1]  # stands in for the model
    used = 4 * len(prompt) + len(reply)
    if used < estimate:  # give back what the estimate took too much
        ask("refund", {**caller(request), "units": estimate - used, "at": decision["at"]})
    return reply


demo = gr.Interface(answer, gr.Textbox(label="Prompt"), gr.Textbox(label="Reply"), api_name="answer")

if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 7860
    demo.queue().launch(server_name="127.0.0.1", server_port=port, share=False, show_error=True)
