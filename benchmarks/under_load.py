"""The training demo of docs/training.md (generate + train) quiet and beside busy processes, in one run:
``python benchmarks/under_load.py --help``.

The demo's commands are read from docs/training.md and run as written (``logoformer-train`` as
``python -m logoformer_timm.dfer.train``), first on the machine as it is ("quiet"), then beside ``--competing``
processes that each keep a core busy (``while True: pass``, stopped at the end and after ``--limit`` seconds in any
case). A process that gets its fair share of the CPUs takes quiet time x (1 + competing / cores) loaded; the table
gives that fair share and the loaded / fair ratio. ``--unfixed`` adds the demo with GNU OpenMP's own spinning
(``GOMP_SPINCOUNT=300000``, its default when ``OMP_WAIT_POLICY`` is unset: the commands before they set it to
``PASSIVE``), quiet and loaded: what the fix costs and gains. Every job is bounded by ``--limit``. ``--suite PATH ...`` times those test files (``python -m pytest -q``) the same
way. Load averages are recorded before and after every run: a quiet run on a busy machine is not quiet.
"""
import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {'logoformer-train': 'logoformer_timm.dfer.train', 'logoformer-eval': 'logoformer_timm.dfer.evaluate'}
UNFIXED_ENV = {'GOMP_SPINCOUNT': '300000'}


def demo_commands(doc: Path = REPO / 'docs' / 'training.md') -> List[List[str]]:
    """The generate and train commands of the demo block of ``doc``, as argument lists for this Python."""
    blocks = re.findall(r'```bash\n(.*?)```', doc.read_text(encoding='utf-8'), re.S)
    block = next((b for b in blocks if 'logoformer_timm.dfer.synthetic' in b), None)
    if block is None:
        raise SystemExit(f'{doc}: no bash block runs logoformer_timm.dfer.synthetic (the demo).')
    commands = [shlex.split(line) for line in block.replace('\\\n', ' ').splitlines() if line.strip()]
    argvs = []
    for argv in commands:
        if argv[0] == 'python':
            argvs.append([sys.executable, *argv[1:]])
        elif argv[0] in COMMANDS:
            argvs.append([sys.executable, '-m', COMMANDS[argv[0]], *argv[1:]])
    return argvs[:2]  # generate + train


def cpu_name() -> str:
    """lscpu's model name (the platform's processor where there is no lscpu)."""
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True, check=True).stdout
        found = re.search(r'^Model name:\s*(.+)$', out, re.M)
        if found:
            return found.group(1).strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def load_averages() -> List[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def busy_processes(n: int, limit: float) -> List[subprocess.Popen]:
    """``n`` processes that each keep a core busy, ending by themselves after ``limit`` seconds."""
    code = f'import time\nend = time.monotonic() + {limit}\nwhile time.monotonic() < end: pass'
    return [subprocess.Popen([sys.executable, '-c', code]) for _ in range(n)]


def stop(processes: Sequence[subprocess.Popen]) -> None:
    for p in processes:
        p.kill()
    for p in processes:
        p.wait()


def timed(argvs: Sequence[List[str]], cwd: str, limit: float, env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Run ``argvs`` one after the other; their times, the load averages around them, and whether all finished."""
    record: Dict[str, Any] = dict(load_before=load_averages(), times=[], finished=True)
    run_env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')])),
               **(env or {})}
    start = time.monotonic()
    for argv in argvs:
        left = limit - (time.monotonic() - start)
        begin = time.monotonic()
        try:
            proc = subprocess.run(argv, cwd=cwd, env=run_env, capture_output=True, text=True, timeout=max(left, 1))
        except subprocess.TimeoutExpired as e:
            record.update(finished=False)
            record['times'].append(round(time.monotonic() - begin, 1))
            record['epochs'] = epoch_times(e.stdout)
            break
        record['times'].append(round(time.monotonic() - begin, 1))
        record['epochs'] = epoch_times(proc.stdout) or record.get('epochs', [])
        if proc.returncode != 0:
            raise SystemExit(f'{shlex.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}')
        record['tail'] = proc.stdout.strip().splitlines()[-1:]
    record.update(seconds=round(time.monotonic() - start, 1), load_after=load_averages())
    return record


def epoch_times(stdout: Any) -> List[float]:
    """The seconds of every epoch the training printed (``epoch 3/16 ... (1.2s)``), also of an unfinished run."""
    text = stdout.decode(errors='replace') if isinstance(stdout, bytes) else stdout or ''
    return [float(t) for t in re.findall(r'^epoch \d+/\d+ .*\(([\d.]+)s\)$', text, re.M)]


def demo_job(limit: float, env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix='under_load_') as work:
        return timed(demo_commands(), work, limit, env)


def suite_job(paths: Sequence[str], limit: float) -> Dict[str, Any]:
    argv = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', *paths]
    return timed([argv], str(REPO), limit)


def measure(args: argparse.Namespace) -> Dict[str, Any]:
    """Every job quiet, then every job beside ``args.competing`` busy processes (all started once)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    jobs = [('demo (generate + train)', lambda: demo_job(args.limit))]
    if args.suite:
        jobs.append((f'pytest -q {" ".join(args.suite)}', lambda: suite_job(args.suite, args.limit)))
    if args.unfixed:
        spin = ' '.join(f'{k}={v}' for k, v in UNFIXED_ENV.items())
        jobs.append((f'demo, unfixed ({spin})', lambda: demo_job(args.limit, UNFIXED_ENV)))
    quiet = {name: job() for name, job in jobs}
    busy = busy_processes(args.competing, args.limit * len(jobs) + 60)
    try:
        loaded = {name: job() for name, job in jobs}
    finally:
        stop(busy)
    rows = []
    for name, _ in jobs:
        q, l = quiet[name], loaded[name]
        fair = q['seconds'] * (1 + args.competing / cores)
        rows.append(dict(job=name, quiet=q, loaded=l, fair_share=round(fair, 1),
                         ratio=round(l['seconds'] / fair, 2) if q['finished'] and l['finished'] else None))
    return dict(command=shlex.join(['python', 'benchmarks/under_load.py', *sys.argv[1:]]), cpu=cpu_name(), cores=cores,
                competing=args.competing, limit=args.limit, python=platform.python_version(),
                demo=[shlex.join(['python' if a == sys.executable else a for a in argv]) for argv in demo_commands()],
                rows=rows, machine_note=args.note)


def _seconds(run: Optional[Dict[str, Any]], limit: float) -> str:
    if run is None:
        return '-'
    if not run['finished']:
        return f'not finished after {run["seconds"]:.0f} s (limit {limit:.0f} s)'
    return f'{run["seconds"]:.1f} s (' + ' + '.join(f'{t:.1f}' for t in run['times']) + ')'


def _load(run: Optional[Dict[str, Any]]) -> str:
    if run is None:
        return '-'
    return f'{run["load_before"][0]:.2f} -> {run["load_after"][0]:.2f}'


def _epochs(run: Optional[Dict[str, Any]]) -> str:
    """How many epochs ran and their median seconds."""
    if not run or not run.get('epochs'):
        return 'none finished' if run and not run['finished'] and 'epochs' in run else '-'
    times = sorted(run['epochs'])
    return f'{len(times)}, median {times[len(times) // 2]:.1f} s'


def markdown(result: Dict[str, Any]) -> str:
    lines = [
        f'Written by `{result["command"]}`.', '',
        f'CPU: {result["cpu"]}, {result["cores"]} cores; Python {result["python"]}. Loaded = beside '
        f'{result["competing"]} processes that each keep a core busy. Fair share = quiet x (1 + {result["competing"]} '
        f'/ {result["cores"]}). Times are wall seconds (generate + train for the demo); epochs = the training epochs '
        f'that ran and their median time; load = the 1-minute load average before -> after the run.', '']
    if result['machine_note']:
        lines += [result['machine_note'], '']
    lines += ['| job | quiet | load | epochs quiet | loaded | load | epochs loaded | fair share | loaded / fair |',
              '|---|---|---|---|---|---|---|---|---|']
    for row in result['rows']:
        ratio = (f'{row["ratio"]:.2f}' if row['ratio'] is not None else '-' if not row['quiet']['finished'] else
                 f'> {row["loaded"]["seconds"] / row["fair_share"]:.2f}')
        fair = f'{row["fair_share"]:.1f} s' if row['quiet']['finished'] else '-'
        lines.append(f'| {row["job"]} | {_seconds(row["quiet"], result["limit"])} | {_load(row["quiet"])} | '
                     f'{_epochs(row["quiet"])} | {_seconds(row["loaded"], result["limit"])} | {_load(row["loaded"])} | '
                     f'{_epochs(row["loaded"])} | {fair} | {ratio} |')
    lines += ['', 'The demo, as docs/training.md gives it:', '', '```bash', *result['demo'], '```', '']
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--competing', type=int, default=4, help='busy processes beside the loaded runs')
    parser.add_argument('--limit', type=float, default=600, help='seconds a job may take before it counts as unfinished')
    parser.add_argument('--suite', nargs='*', default=[], metavar='PATH', help='test files to time the same way')
    parser.add_argument('--unfixed', action='store_true', help="add the demo with GNU OpenMP's default spinning, quiet and loaded")
    parser.add_argument('--note', default='', help='a line on the machine, written above the table')
    parser.add_argument('--output', default=str(REPO / 'benchmarks' / 'results' / 'under_load'),
                        help='writes OUTPUT.md and OUTPUT.json')
    args = parser.parse_args(argv)
    if args.competing < 0 or args.limit <= 0:
        parser.error('--competing must be >= 0 and --limit > 0')
    result = measure(args)
    text = markdown(result)
    Path(args.output + '.json').write_text(json.dumps(result, indent=1) + '\n', encoding='utf-8')
    Path(args.output + '.md').write_text('# Training demo under load\n\n' + text, encoding='utf-8')
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
