"""The real ``lark-oapi`` SDK's long-connection client, as a child process for the tests.

    python -m tests.fakes.lark_sdk_client --domain http://127.0.0.1:PORT --app-id ID --app-secret S

Prints ``EVENT {json}`` per ``im.message.receive_v1`` it receives (event_id, message_id,
chat_id, content) and runs until killed (the SDK's ``start()`` never returns, and its
module-level event loop is why it runs in a process of its own: lark.md §1.9, §5.1).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--domain", required=True)
    p.add_argument("--app-id", required=True)
    p.add_argument("--app-secret", required=True)
    args = p.parse_args()

    import lark_oapi as lark

    def on_message(data: Any) -> None:
        message = data.event.message
        line = {
            "event_id": data.header.event_id,
            "message_id": message.message_id,
            "chat_id": message.chat_id,
            "content": message.content,
        }
        sys.stdout.write("EVENT " + json.dumps(line) + "\n")
        sys.stdout.flush()

    handler = (
        lark.EventDispatcherHandler.builder("", "")
        .register_p2_im_message_receive_v1(on_message)
        .build()
    )
    client = lark.ws.Client(
        args.app_id,
        args.app_secret,
        event_handler=handler,
        domain=args.domain,
        log_level=lark.LogLevel.INFO,
    )
    client.start()


if __name__ == "__main__":
    main()
