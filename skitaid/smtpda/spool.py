"""The mail spool: one file per message, its state told by the folder it is in.

    tmp/        being written by send() (never read by the agent)
    new/        <id>                              ready, never tried
    deferred/   <next try>~<attempts>~<id>        a temporary failure; due at <next try>
    sending/    <name as in new/ or deferred/>    claimed by a delivery thread
    done/       <id>                              the server said 250: only to be unlinked
    failed/     <id>.eml + <id>.json              permanent failure or too old, with the answer

A file moves between folders by rename (atomic on one file system), so a
message is always in exactly one state, and two threads (or a restarted
agent) can never both claim it: the loser's rename fails.

A spool file is `MAGIC`, one line of JSON (the envelope), then the message
bytes. Ids start with the creation time in nanoseconds, so ages and order
are known from names alone.
"""
import json
import os
import secrets
import time

MAGIC = b"SKITAID-MAIL 1\n"
STATES = ("tmp", "new", "deferred", "sending", "done", "failed")
DIR_MODE = 0o700
FILE_MODE = 0o600
STALE_TMP = 3600.0          # a tmp/ file this old was left by a writer that died


class SpoolError(Exception):
    pass


def new_id():
    return "%d.%d.%s" % (time.time_ns(), os.getpid(), secrets.token_hex(4))


def created_at(name):
    """Epoch seconds a message was spooled, from any of its file names."""
    try:
        return int(name.rsplit("~", 1)[-1].split(".", 1)[0]) / 1e9
    except ValueError:
        return 0.0


def parse(name):
    """(next try, attempts, id) of a name in new/, deferred/ or sending/."""
    parts = name.split("~")
    if len(parts) == 3:
        return float(parts[0]), int(parts[1]), parts[2]
    return 0.0, 0, name


def deferred_name(next_try, attempts, ident):
    return "%d~%d~%s" % (int(next_try), attempts, ident)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path, chunks, fsync=True):
    """Write a new file with mode 0600 (and fsync it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def encode(envelope, data):
    return [MAGIC, json.dumps(envelope, separators=(",", ":")).encode("utf-8"), b"\n", data]


def decode(blob):
    if not blob.startswith(MAGIC):
        raise SpoolError("not a spool file")
    head, sep, data = blob[len(MAGIC):].partition(b"\n")
    if not sep:
        raise SpoolError("truncated spool file")
    return json.loads(head), data


class Spool:
    """`fsync`: put() returns once the mail is on disk (it survives a power cut);
    without it, once it is in the kernel (it survives any crash of the app)."""

    def __init__(self, path, fsync=True):
        self.path = os.path.abspath(path)
        self.fsync = fsync
        self._made = False

    def dir(self, state):
        return os.path.join(self.path, state)

    def create(self, uid=-1, gid=-1):
        """Make the folders (mode 0700); as root, owned by uid/gid (the workers' user)."""
        for d in (self.path,) + tuple(self.dir(s) for s in STATES):
            os.makedirs(d, mode=DIR_MODE, exist_ok=True)
            if uid != -1 or gid != -1:
                os.chown(d, uid, gid)
        self._made = True

    # -- the app's side -------------------------------------------------------------
    def put(self, envelope, data):
        """Spool one message atomically: tmp/ + fsync, then rename into new/.
        Returns its id."""
        if not self._made and not os.path.isdir(self.dir("new")):
            self.create()
        self._made = True
        ident = new_id()
        envelope = dict(envelope, id=ident)
        tmp = os.path.join(self.dir("tmp"), ident)
        _write(tmp, encode(envelope, data), self.fsync)
        os.replace(tmp, os.path.join(self.dir("new"), ident))
        if self.fsync:
            _fsync_dir(self.dir("new"))     # the rename survives a crash of the machine too
        return ident

    # -- the agent's side -----------------------------------------------------------
    def listing(self, state):
        try:
            return [n for n in os.listdir(self.dir(state)) if not n.startswith(".")]
        except FileNotFoundError:
            return []

    def due(self, now):
        """Names ready for a try: new/ oldest first, then deferred/ that are due."""
        ready = sorted(("new", n) for n in self.listing("new"))
        for n in self.listing("deferred"):
            try:
                if parse(n)[0] <= now:
                    ready.append(("deferred", n))
            except ValueError:
                continue
        return ready

    def claim(self, state, name):
        """Move a message into sending/; None when another thread took it first."""
        dest = os.path.join(self.dir("sending"), name)
        try:
            os.rename(os.path.join(self.dir(state), name), dest)
        except FileNotFoundError:
            return None
        return dest

    def load(self, path):
        with open(path, "rb") as f:
            return decode(f.read())

    def delivered(self, name):
        """The server accepted it: the rename into done/ is the record that
        it must never be sent again; the unlink after it only frees space."""
        ident = parse(name)[2]
        done = os.path.join(self.dir("done"), ident)
        os.rename(os.path.join(self.dir("sending"), name), done)
        os.unlink(done)

    def defer(self, name, next_try, attempts):
        ident = parse(name)[2]
        os.rename(os.path.join(self.dir("sending"), name),
                  os.path.join(self.dir("deferred"), deferred_name(next_try, attempts, ident)))

    def requeue(self, envelope, data, next_try, attempts):
        """A new deferred message (the recipients still to be tried of a mail
        that others accepted)."""
        ident = envelope["id"]
        tmp = os.path.join(self.dir("tmp"), ident)
        _write(tmp, encode(envelope, data))
        os.replace(tmp, os.path.join(self.dir("deferred"), deferred_name(next_try, attempts,
                                                                           ident)))

    def fail(self, name, envelope, data, record):
        """Keep the message in failed/ as <id>.eml, with <id>.json saying why
        (the envelope without any password, and the server's answer)."""
        ident = envelope.get("id") or parse(name)[2]
        info = {k: v for k, v in envelope.items() if k != "smtp"}
        smtp = envelope.get("smtp")
        if smtp:
            info["server"] = smtp.get("server", "")
        info.update(record)
        for suffix, body in ((".json", json.dumps(info, indent=1).encode("utf-8")),
                             (".eml", data)):
            final = os.path.join(self.dir("failed"), ident + suffix)
            tmp = os.path.join(self.dir("tmp"), ident + suffix)
            _write(tmp, [body])
            os.replace(tmp, final)
        if name is not None:
            try:
                os.unlink(os.path.join(self.dir("sending"), name))
            except FileNotFoundError:
                pass

    def recover(self, now=None):
        """At agent start (alone on the spool): finish what a killed agent left.

        done/ holds mail the server accepted: it is removed, never sent again.
        sending/ holds mail whose final answer was not recorded: it goes back
        to be tried again (at once). Returns (removed, requeued) name lists."""
        now = time.time() if now is None else now
        removed, requeued = [], []
        for n in self.listing("done"):
            try:
                os.unlink(os.path.join(self.dir("done"), n))
                removed.append(n)
            except FileNotFoundError:
                pass
        for n in self.listing("sending"):
            try:
                _, attempts, ident = parse(n)
            except ValueError:
                continue
            src = os.path.join(self.dir("sending"), n)
            if attempts:
                dest = os.path.join(self.dir("deferred"), deferred_name(now, attempts, ident))
            else:
                dest = os.path.join(self.dir("new"), ident)
            os.rename(src, dest)
            requeued.append(ident)
        for n in self.listing("tmp"):
            path = os.path.join(self.dir("tmp"), n)
            try:
                if os.stat(path).st_mtime < now - STALE_TMP:
                    os.unlink(path)
            except FileNotFoundError:
                pass
        return removed, requeued

    def counts(self, now=None):
        """queued, deferred, sending, failed counts and the oldest queued age (s)."""
        now = time.time() if now is None else now
        new, deferred, sending = (self.listing(s) for s in ("new", "deferred", "sending"))
        failed = [n for n in self.listing("failed") if n.endswith(".json")]
        ages = [now - created_at(n) for n in new + deferred + sending if created_at(n)]
        return {"queued": len(new), "deferred": len(deferred), "sending": len(sending),
                "failed": len(failed), "oldest_age": max(ages) if ages else 0.0}
