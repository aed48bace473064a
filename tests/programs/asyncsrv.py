# A python asyncio UNIX server with a periodic task: the request count and
# the ticks must carry on after a restore.
import asyncio, sys

state = {"requests": 0, "ticks": 0}

async def handle(reader, writer):
    await reader.read(100)
    state["requests"] += 1
    writer.write(f"requests={state['requests']} ticks={state['ticks']}\n".encode())
    await writer.drain()
    writer.close()

async def tick():
    while True:
        await asyncio.sleep(0.02)
        state["ticks"] += 1

async def main():
    await asyncio.start_unix_server(handle, sys.argv[1])
    asyncio.get_running_loop().create_task(tick())
    await asyncio.Event().wait()

asyncio.run(main())
