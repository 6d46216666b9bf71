"""A listener's session through py-opensonic (libopensonic), a third-party Subsonic client.

Run by tests/subsonic_clients.rs against `segue up`; every step raises on a wrong answer
(libopensonic also parses each answer into its typed models, so a missing or mistyped
field fails here). Prints a JSON summary on the last line for the Rust test to check.

Environment: SEGUE_APP (http://127.0.0.1:PORT), SEGUE_API_KEY, SEGUE_EXPECT (a file holding
the origin's bytes of the first song's `high` tier), SEGUE_PLAY_MS (scrobble time).
"""

import asyncio
import json
import os
import sys

from libopensonic import AsyncConnection


def check(cond, what):
    if not cond:
        raise AssertionError(what)


async def walk():
    base, port = os.environ["SEGUE_APP"].rsplit(":", 1)
    conn = AsyncConnection(base, api_key=os.environ["SEGUE_API_KEY"], port=int(port),
                           app_name="segue-walk")
    try:
        check(await conn.ping(), "ping")
        found = await conn.search3("continuum")
        check(found.album and found.song, f"search3 found nothing: {found}")
        album = await conn.get_album(found.album[0].id)
        songs = sorted(album.song, key=lambda s: s.track or 0)
        check(len(songs) >= 4, f"the album has {len(songs)} songs")
        first = songs[0]

        # Stream with a Range: libopensonic POSTs, follows the 302 to the edge as a GET
        # with the same Range, and the bytes are the origin's.
        expect = open(os.environ["SEGUE_EXPECT"], "rb").read()
        res = await conn.stream(first.id, byte_range="bytes=100-4195")
        body = await res.read()
        check(res.status == 206, f"stream answered {res.status}")
        check(res.headers.get("Content-Range", "").startswith("bytes 100-4195/"), f"{res.headers}")
        check(body == expect[100:4196], "the streamed bytes are not the origin's")

        # A playlist made, renamed, added to and trimmed.
        check(await conn.create_playlist(name="Road trip", song_ids=[songs[0].id, songs[1].id]), "createPlaylist")
        mine = [p for p in await conn.get_playlists() if p.name == "Road trip"]
        check(len(mine) == 1, f"playlists: {mine}")
        pid = mine[0].id
        check(await conn.update_playlist(pid, name="Road trip II", song_ids_to_add=[songs[2].id],
                                         song_indices_to_remove=[0]), "updatePlaylist")
        pl = await conn.get_playlist(pid)
        check(pl.name == "Road trip II", f"name {pl.name}")
        check([e.id for e in pl.entry] == [songs[1].id, songs[2].id], f"entries {[e.id for e in pl.entry]}")

        # A star is a like; getStarred2 lists it.
        check(await conn.star(sids=[first.id]), "star")
        starred = await conn.get_starred2()
        check(any(s.id == first.id for s in starred.song or []), f"starred: {starred}")

        # The same scrobble twice (a client retrying): the server counts it once.
        # libopensonic takes Unix seconds and sends milliseconds.
        when = int(os.environ["SEGUE_PLAY_MS"]) // 1000
        for _ in range(2):
            check(await conn.scrobble(first.id, submission=True, listen_time=when), "scrobble")
        print(json.dumps({"client": "py-opensonic", "scrobbled": first.id, "playlist": pid}))
    finally:
        await conn.cleanup()


asyncio.run(walk())
