"""Lark (Feishu) bots: lark.json, one long connection per bot inside the server, the REST
calls, and the bridge between Lark chats and pal rooms (docs/lark.md).

Nothing here imports ``lark_oapi`` at module import: it takes seconds, and only a server with
bots configured needs it.
"""

FEISHU_DOMAIN = "https://open.feishu.cn"
LARK_DOMAIN = "https://open.larksuite.com"
