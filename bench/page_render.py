"""The chat page's Markdown rendering cost in headless Chromium, by answer size.

A streaming answer is rendered whole again at most every 60 ms (``RENDER_EVERY_MS`` in
``static/app.js``): this measures such renders (markdown-it, DOMPurify, highlight.js, the
code blocks' copy buttons) of answers of a few sizes, made of paragraphs, lists, a table and
a Python code block repeated. ``cold_ms`` is the first render of the whole text (nothing
cached: a reload); the ``streaming`` figures are renders of the same text with one more
character at its end each time (what a delta does). It serves the page from an embedded
server (memory backends) and calls the page's own ``renderMarkdown`` in it.

    python bench/page_render.py [--sizes 2,10,50,200] [--runs 30]

Prints one JSON line per size: KB, cold render, median and p95 of the streaming renders.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playwright.async_api import async_playwright
from tests.server.helpers import ServerThread

from chatscale.config import load_settings

BLOCK = """## Step {n}

Some **bold** text, some *emphasis* and a [link](https://example.com/{n}).

- first point
- second point with `inline code`

| key | value |
|:--|--:|
| n | {n} |

```python
def step_{n}(items):
    return [item * 2 for item in items if item > {n}]
```

"""

MEASURE = """async ([text, runs]) => {
  const { renderMarkdown } = await import('/static/markdown.js');
  const target = document.createElement('div');
  document.body.appendChild(target);
  const times = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    renderMarkdown(target, text + 'x'.repeat(i), true);
    times.push(performance.now() - start);
  }
  target.remove();
  return times;
}"""


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2,10,50,200", help="answer sizes in KB")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with ServerThread(load_settings()) as server:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"]
            )
            page = await browser.new_page()
            await page.goto(server.url + "/")
            for size in (int(s) for s in args.sizes.split(",")):
                text, n = "", 0
                while len(text) < size * 1024:
                    text += BLOCK.format(n=n)
                    n += 1
                cold, *rest = await page.evaluate(MEASURE, [text, args.runs + 1])
                times = sorted(rest)
                print(
                    json.dumps(
                        {
                            "kb": round(len(text) / 1024, 1),
                            "cold_ms": round(cold, 1),
                            "streaming_median_ms": round(times[len(times) // 2], 1),
                            "streaming_p95_ms": round(times[int(len(times) * 0.95) - 1], 1),
                        }
                    )
                )
            await browser.close()


if __name__ == "__main__":
    asyncio.run(main())
