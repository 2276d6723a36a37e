"""Calls docs/examples/gradio_enforce.py's `answer` through the limiter with the official
gradio_client: prints one JSON line with each call's reply, or the error a user would see.

    python gradio_answer_client.py <url> <client address> <prompt> <calls>
"""
import json
import sys

from gradio_client import Client


def main() -> None:
    url, ip, prompt, calls = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    out = []
    client = Client(url, headers={"CF-Connecting-IP": ip}, verbose=False)
    for _ in range(calls):
        try:
            out.append({"reply": client.predict(prompt, api_name="/answer")})
        except Exception as e:  # the test reads what a user would see
            out.append({"error": f"{type(e).__name__}: {e}"})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
