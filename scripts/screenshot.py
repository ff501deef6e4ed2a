"""Screenshot a durable run in Temporal's web UI, for the docs: ``python scripts/screenshot.py [OUT.png]``.

Runs the bundled demo agent (offline, scripted LM) on the embedded Temporal dev server with its web UI, then has
headless Chromium (Debian: ``apt-get install chromium``) capture the run's timeline: its LM calls and tool calls as
activities. Writes docs/images/durable-run.png by default.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "docs" / "images" / "durable-run.png"
TASK_QUEUE = "screenshot"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("No Chromium on PATH. On Debian: apt-get install -y chromium")


def capture(url: str, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="durable-dspy-chromium-") as profile:
        args = [
            chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
            f"--user-data-dir={profile}", "--window-size=1400,1000",
            "--virtual-time-budget=20000",  # let the single-page app fetch and render the run
            f"--screenshot={out}", url,
        ]  # fmt: skip
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


async def main(out: Path) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import dspy

    import durable_dspy
    from durable_dspy._devserver import DevServer
    from durable_dspy.demo import QUESTION, ResearchAgent
    from durable_dspy.demo._script import scripted_server

    lm_server = scripted_server(latency=0.3).start()
    lm = dspy.LM("openai/scripted", api_base=lm_server.url + "/v1", api_key="scripted", cache=False)
    async with DevServer(ui=True) as server:
        stop = asyncio.Event()
        ready: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        serving = asyncio.ensure_future(
            durable_dspy.serve_async(
                task_queue=TASK_QUEUE, lm=lm, address=server.address, stop=stop, on_ready=ready.set_result
            )
        )
        await asyncio.wait({ready, serving}, return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            serving.result()  # the worker failed to start: say why
        client = await durable_dspy.connect(server.address)
        handle = await ResearchAgent.start(client, question=QUESTION, id="research-agent-demo", task_queue=TASK_QUEUE)
        prediction = await handle.result()
        print(f"run {handle.id} finished: {prediction.answer}")
        # The timeline tab: one bar per activity, each LM call labelled with its predictor, each tool with its name.
        url = f"{server.ui_url}/namespaces/default/workflows/{handle.id}/{handle.run_id}/timeline"
        await asyncio.to_thread(capture, url, out)
        print(f"screenshot of {url} -> {out}")
        stop.set()
        await serving
    lm_server.stop()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT))
