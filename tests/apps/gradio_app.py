"""A small Gradio app for the end-to-end tests: a plain function and a streaming generator,
on the queue, served on 127.0.0.1 at the port given as the first argument."""
import sys
import time

import gradio as gr


def greet(name: str) -> str:
    return f"Hello, {name}!"


def count(n: float):
    for i in range(int(n)):
        time.sleep(0.1)
        yield f"step {i + 1}"


with gr.Blocks(title="edge-limiter e2e") as demo:
    name = gr.Textbox(label="Name", elem_id="name")
    out = gr.Textbox(label="Greeting", elem_id="greeting")
    gr.Button("Greet", elem_id="greet").click(greet, name, out, api_name="greet")
    steps = gr.Number(value=3, label="Steps")
    progress = gr.Textbox(label="Progress")
    gr.Button("Count", elem_id="count").click(count, steps, progress, api_name="count")

if __name__ == "__main__":
    demo.queue().launch(server_name="127.0.0.1", server_port=int(sys.argv[1]), share=False, show_error=True)
