"""Thread, Process and Subprocess tasks: the same Task verbs for local work.

Each is a coroutine on the worker's loop that waits for an executor (or a
child process), so it plugs into Task/Tasks like any HTTP call.
"""
import asyncio
import functools

from .task import STA_NORMAL, Result


async def run_in(engine, kind, fn, args, kwargs, meta):
    loop = asyncio.get_running_loop()
    work = loop.run_in_executor(engine.executor(kind), functools.partial(fn, *args, **kwargs))
    if engine.zombie_timeout:
        # given up after zombie_timeout: the Task ends as timed out (a thread
        # cannot be killed and runs on; its result is dropped)
        value = await asyncio.wait_for(work, engine.zombie_timeout)
    else:
        value = await work
    return Result(STA_NORMAL, 200, "OK", data=value, meta=meta)


async def run_subprocess(command, timeout, meta):
    if isinstance(command, str):
        proc = await asyncio.create_subprocess_shell(
            command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    else:
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:        # timed out or cancelled: the child must not outlive the task
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    ok = proc.returncode == 0
    result = Result(STA_NORMAL, 200 if ok else 500, "OK" if ok else "Exit %d" % proc.returncode,
                    content=out, data=out.decode("utf-8", "replace"), meta=meta)
    result.meta["stderr"] = err.decode("utf-8", "replace")
    result.meta["returncode"] = proc.returncode
    return result
