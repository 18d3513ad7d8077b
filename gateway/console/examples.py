"""Copyable examples for one model: curl, the OpenAI Python SDK, the OpenAI Node SDK.

The key is never filled in: each example reads it from the environment variable
`GATEWAY_API_KEY`, so a page, a screenshot or a shell history holds no secret.

Pure module: no I/O.
"""

from __future__ import annotations

import json


def examples(base_url: str, model_id: str) -> list[tuple[str, str, str]]:
    """(id, title, code) for each example; `base_url` ends in /v1."""
    model = json.dumps(model_id)
    body = json.dumps({"model": model_id, "messages": [{"role": "user", "content": "Say hello"}]})
    curl = (
        f"curl {base_url}/chat/completions \\\n"
        '  -H "Authorization: Bearer $GATEWAY_API_KEY" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        f"  -d '{body.replace(chr(39), chr(39) + chr(92) + chr(39) + chr(39))}'"
    )
    python = (
        "import os\n"
        "from openai import OpenAI\n\n"
        f'client = OpenAI(base_url="{base_url}", api_key=os.environ["GATEWAY_API_KEY"])\n'
        "reply = client.chat.completions.create(\n"
        f"    model={model},\n"
        '    messages=[{"role": "user", "content": "Say hello"}],\n'
        ")\n"
        "print(reply.choices[0].message.content)\n"
    )
    node = (
        'import OpenAI from "openai";\n\n'
        "const client = new OpenAI({\n"
        f'  baseURL: "{base_url}",\n'
        "  apiKey: process.env.GATEWAY_API_KEY,\n"
        "});\n"
        "const reply = await client.chat.completions.create({\n"
        f"  model: {model},\n"
        '  messages: [{ role: "user", content: "Say hello" }],\n'
        "});\n"
        "console.log(reply.choices[0].message.content);\n"
    )
    return [
        ("curl", "curl", curl),
        ("python", "Python (openai)", python),
        ("node", "Node (openai)", node),
    ]
