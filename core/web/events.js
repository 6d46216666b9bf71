// Server-sent events read through fetch rather than EventSource, which cannot send the
// Authorization header: shared by the listener app and the operator console (each server
// serves this file at /web/events.js).

// Read a response's events as they arrive, calling onEvent(name, data) for each (`data`
// the parsed JSON of its data line, undefined for a keep-alive). Stops when onEvent
// returns false (false is returned) or the stream ends (true is returned).
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return true;
    buf += value;
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const line = (prefix) => block.split('\n').find((l) => l.startsWith(prefix));
      const name = line('event: ')?.slice(7);
      const data = line('data: ');
      if ((await onEvent(name, data ? JSON.parse(data.slice(6)) : undefined)) === false) return false;
    }
  }
}

// Follow the events at `url` until `signal` aborts or onEvent returns false, reconnecting
// a second after a failure, and after the stream ends too when `again` is set.
export function followEvents(url, headers, signal, onEvent, { again }) {
  (async () => {
    while (!signal.aborted) {
      try {
        const r = await fetch(url, { headers, signal });
        if (!(await readEvents(r, onEvent)) || !again) return;
      } catch {
        if (signal.aborted) return;
      }
      await new Promise((ok) => setTimeout(ok, 1000));
    }
  })();
}
