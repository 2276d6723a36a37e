"""Drives a Gradio app through the limiter with the official gradio_client, as an app's own
users would: prints one JSON line with what each call returned, or the error it raised.

    python gradio_client_check.py <url> <client address> <calls>
"""
import json
import sys

from gradio_client import Client


def main() -> None:
    url, ip, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
    out = {"greet": [], "count": None, "error": None}
    try:
        client = Client(url, headers={"CF-Connecting-IP": ip}, verbose=False)
        for i in range(calls):
            out["greet"].append(client.predict(f"user {i}", api_name="/greet"))
        job = client.submit(3, api_name="/count")
        out["count"] = [str(step) for step in job]
    except Exception as e:  # the test reads what a user would see
        out["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
