#!/usr/bin/env python3
"""A TCP proxy on 127.0.0.1 that delays every byte by a fixed one-way time in each
direction (a round trip of twice that), without limiting throughput: a mobile link's
latency in front of a loopback server, for benchmarks that measure handshakes.

    delay_proxy.py LISTEN_PORT UPSTREAM_PORT ONE_WAY_MS
"""
import asyncio
import sys


async def pump(reader, writer, delay):
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def deliver():
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                break
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(deliver())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((loop.time() + delay, data))
    except ConnectionError:
        pass
    queue.put_nowait((loop.time() + delay, None))
    try:
        await sender
    except ConnectionError:
        pass


async def main():
    port, upstream, one_way_ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    delay = one_way_ms / 1000

    async def handle(client_reader, client_writer):
        await asyncio.sleep(delay)  # the SYN's way there
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
        except OSError:
            client_writer.close()
            return
        await asyncio.sleep(delay)  # the SYN-ACK's way back
        await asyncio.gather(pump(client_reader, up_writer, delay), pump(up_reader, client_writer, delay))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


asyncio.run(main())
