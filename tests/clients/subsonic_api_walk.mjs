// A listener's session through the npm `subsonic-api` client (TypeScript, third-party),
// signing in with the legacy token scheme (u, t = md5(password + s), s) that older
// players use. Run by tests/subsonic_clients.rs against `segue up`; throws on a wrong
// answer and prints a JSON summary on the last line.
//
// Environment: SEGUE_APP, SEGUE_SUBSONIC_USER, SEGUE_SUBSONIC_PASSWORD, SEGUE_EXPECT,
// SEGUE_PLAY_MS (as in opensonic_walk.py).
import { readFileSync } from 'node:fs';
import { SubsonicAPI } from 'subsonic-api';

const check = (cond, what) => {
  if (!cond) throw new Error(what);
};
const ok = (r, what) => {
  check(r && r.status === 'ok', `${what}: ${JSON.stringify(r)}`);
  return r;
};

const api = new SubsonicAPI({
  url: process.env.SEGUE_APP,
  auth: { username: process.env.SEGUE_SUBSONIC_USER, password: process.env.SEGUE_SUBSONIC_PASSWORD },
});

ok(await api.ping(), 'ping');
const found = ok(await api.search3({ query: 'continuum' }), 'search3').searchResult3;
check(found.album?.length && found.song?.length, `search3 found nothing: ${JSON.stringify(found)}`);
const album = ok(await api.getAlbum({ id: found.album[0].id }), 'getAlbum').album;
check(album.created instanceof Date && !isNaN(album.created), `created is a date: ${album.created}`);
const songs = [...album.song].sort((a, b) => (a.track ?? 0) - (b.track ?? 0));
check(songs.length >= 4, `the album has ${songs.length} songs`);
const first = songs[0];

// Stream with a Range: fetch follows the 302 to the signed edge URL with the same Range.
const expect = readFileSync(process.env.SEGUE_EXPECT);
const res = await api.custom('stream.view', { id: first.id });
check(res.status === 200 || res.status === 206, `plain stream answered ${res.status}`);
await res.arrayBuffer();
// The library builds authenticated URLs only inside its calls: a ranged GET goes through
// its `fetch` hook, which adds the Range header.
const ranged = new SubsonicAPI({
  url: process.env.SEGUE_APP,
  auth: { username: process.env.SEGUE_SUBSONIC_USER, password: process.env.SEGUE_SUBSONIC_PASSWORD },
  fetch: (input, init) => fetch(input, { ...init, headers: { ...(init?.headers ?? {}), Range: 'bytes=100-4195' } }),
});
const part = await ranged.stream({ id: first.id });
const bytes = Buffer.from(await part.arrayBuffer());
check(part.status === 206, `ranged stream answered ${part.status}`);
check(bytes.equals(expect.subarray(100, 4196)), 'the streamed bytes are not the origin\'s');

// A playlist made, renamed, added to and trimmed.
const made = ok(await api.createPlaylist({ name: 'Night bus', songId: [songs[0].id, songs[1].id] }), 'createPlaylist');
const pid = made.playlist.id;
ok(await api.updatePlaylist({ playlistId: pid, name: 'Night bus II', songIdToAdd: [songs[2].id], songIndexToRemove: [0] }),
  'updatePlaylist');
const pl = ok(await api.getPlaylist({ id: pid }), 'getPlaylist').playlist;
check(pl.name === 'Night bus II', `name ${pl.name}`);
check(JSON.stringify(pl.entry.map((e) => e.id)) === JSON.stringify([songs[1].id, songs[2].id]), `entries ${pl.entry.map((e) => e.id)}`);
check(pl.changed instanceof Date, 'changed is a date');

ok(await api.star({ id: first.id }), 'star');
const starred = ok(await api.getStarred2({}), 'getStarred2').starred2;
check(starred.song?.some((s) => s.id === first.id), `starred: ${JSON.stringify(starred)}`);

const time = Number(process.env.SEGUE_PLAY_MS);
for (let i = 0; i < 2; i++) ok(await api.scrobble({ id: first.id, submission: true, time }), 'scrobble');
console.log(JSON.stringify({ client: 'subsonic-api', scrobbled: first.id, playlist: pid }));
