"""Pictures for a student's feedback page, drawn from PUBLIC demonstration inputs only (fixed seeds printed on the
page, never the hidden test inputs): their hidden_grad_norms curves against the reference and the bound, their
clipping against torch's rule, and their truncated gradients against the reference. Each picture is a PNG
embedded in the page as base64, so the page opens without a network."""

from __future__ import annotations

import base64
import collections
import functools
import hashlib
import io

import numpy as np

from autograder.sandbox import StudentCrashed, StudentTimeout

PUBLIC_SEED = 2024  # shown on the page: these inputs are public
# Pictures are drawn at the width the feedback page gives them (60rem = 960 CSS px), so at 100% zoom nothing is
# scaled and the legend's 10 points are 10 * DPI / 72 = 13.9 px tall (tests/test_pages.py measures it in Chromium).
DPI = 100
WIDTH_INCHES = 9.6
LEGEND_POINTS = 10


# A picture is plain data (_figure: curves, labels, scales), drawn by one function (_render). Rendering is most
# of its cost (~80 ms), and in a class most students draw the same picture: curves are drawn to 4 significant
# digits (every axis here is logarithmic; a pixel is ~0.3% of an axis), so answers that agree to that precision
# (right ones, and mistakes too small to see) give the very same picture. Each distinct picture is rendered once
# per worker process, keyed by its data; a bounded number are kept.
_RENDERED: "collections.OrderedDict[str, str]" = collections.OrderedDict()
_RENDERED_MAX = 256


def _figure(title: str, xlabel: str, ylabel: str, scale: str, legend_below: bool, ylim=None) -> dict:
    return {"title": title, "xlabel": xlabel, "ylabel": ylabel, "scale": scale, "legend_below": legend_below,
            "ylim": ylim, "lines": []}


def _significant(values, digits: int = 4) -> np.ndarray:
    """values rounded to `digits` significant digits (zeros, NaN and inf unchanged)."""
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(all="ignore"):
        scale = 10.0 ** np.floor(np.log10(np.abs(values)))
        rounded = np.round(values / scale, digits - 1) * scale
    return np.where(np.isfinite(rounded), rounded, values)


def _line(figure: dict, x, y, label: str, reference: bool = False, **style) -> None:
    """A curve: a reference one is drawn thick and pale, the student's thin (to 4 significant digits: see above)."""
    style = {"lw": 3, "alpha": 0.35, **style} if reference else {"lw": 1.2, **style}
    figure["lines"].append((_significant(x), _significant(y), label, style))


def _key(figure: dict) -> str:
    digest = hashlib.sha256(repr({k: v for k, v in figure.items() if k != "lines"}).encode())
    for x, y, label, style in figure["lines"]:
        digest.update(repr((label, sorted(style.items()))).encode())
        digest.update(x.tobytes() + b"|" + y.tobytes())
    return digest.hexdigest()


def _render(figure: dict) -> str:
    """The figure as a base64 PNG, rendered once per distinct content."""
    key = _key(figure)
    if key in _RENDERED:
        _RENDERED.move_to_end(key)
        return _RENDERED[key]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    below = figure["legend_below"]
    fig, ax = plt.subplots(figsize=(WIDTH_INCHES, 5.6 if below else 4.8))
    try:
        # Fixed margins with room for a legend under the axes: bbox_inches="tight" would render twice.
        fig.subplots_adjust(left=0.09, right=0.98, top=0.92, bottom=0.3 if below else 0.12)
        plot = {"loglog": ax.loglog, "semilogy": ax.semilogy, "linear": ax.plot}[figure["scale"]]
        for x, y, label, style in figure["lines"]:
            plot(x, y, label=label, **style)
        if figure["ylim"] is not None:
            ax.set_ylim(*figure["ylim"])
        ax.set_xlabel(figure["xlabel"])
        ax.set_ylabel(figure["ylabel"])
        ax.set_title(figure["title"])
        if below:
            ax.legend(fontsize=LEGEND_POINTS, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.13))
        else:
            ax.legend(fontsize=LEGEND_POINTS)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    _RENDERED[key] = png = base64.b64encode(buffer.getvalue()).decode("ascii")
    if len(_RENDERED) > _RENDERED_MAX:
        _RENDERED.popitem(last=False)
    return png


def _orthogonal(rng, H: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((H, H)))
    return q * np.sign(np.diag(r))


def _finite_curve(value, length: int):
    if isinstance(value, np.ndarray) and value.shape == (length,) and value.dtype.kind == "f":
        return value
    return None


@functools.lru_cache(maxsize=4)
def _decay_case(ref):
    """The decay picture's public inputs and the reference's curves on them, computed once per process."""
    rng = np.random.default_rng(PUBLIC_SEED)
    N, T, D, H = 2, 30, 3, 8
    x = rng.standard_normal((N, T, D)) * 0.1
    h0 = np.zeros((N, H))
    Wx = rng.standard_normal((D, H)) * 0.5
    b = np.zeros(H)
    dh = np.zeros((N, T, H))
    dh[:, -1] = rng.standard_normal((N, H))
    Q = _orthogonal(rng, H)
    cases = []
    for rho, color in ((0.8, "tab:blue"), (1.0, "tab:green"), (1.2, "tab:red")):
        Wh = rho * Q
        want = ref.hidden_grad_norms(dh, ref.rnn_forward(x, h0, Wx, Wh, b)[1])
        cases.append((rho, color, Wh, want / want[-1], ref.jacobian_norm_bound(Wh, T)))
    return (x, h0, Wx, b, dh, T), cases


def decay_plot(student, ref) -> tuple[str, str, dict]:
    (x, h0, Wx, b, dh, T), cases = _decay_case(ref)
    figure = _figure("Gradient reaching each step (loss at the last step only)", "time step t",
                     "norms[t] / norms[T-1]", "semilogy", legend_below=True)
    steps, notes = np.arange(T), []
    for rho, color, Wh, want, bound in cases:
        _line(figure, steps, want, f"reference, sigma_max={rho}", reference=True, color=color)
        _line(figure, steps, bound, f"bound, sigma_max={rho}", color=color, ls=":", lw=1.5)
        try:
            _, cache = student.rnn_forward(x, h0, Wx, Wh, b)
            got = _finite_curve(student.hidden_grad_norms(dh, cache), T)
        except Exception as exc:  # the student's code failed: say so on the page
            got, notes = None, notes + [f"sigma_max={rho}: {type(exc).__name__}"]
        if got is not None and got[-1] > 0 and np.all(np.isfinite(got)):
            _line(figure, steps, got / got[-1], f"yours, sigma_max={rho}", color=color)
    caption = (f"Public inputs (seed {PUBLIC_SEED}): tanh RNN, Wh = rho * Q with Q orthogonal, small inputs. "
               "Thick pale lines: reference; thin lines: your hidden_grad_norms; dotted: jacobian_norm_bound.")
    if notes:
        caption += " Your curve is missing where your code failed (" + "; ".join(notes) + ")."
    return "How the gradient decays", caption, figure


def _norm_after(arrays) -> float:
    return float(np.sqrt(sum(np.sum(np.asarray(a, dtype=float) ** 2) for a in arrays)))


@functools.lru_cache(maxsize=4)
def _clipping_case(ref):
    """The clipping picture's public inputs and the reference's curves on them, computed once per process."""
    rng = np.random.default_rng(PUBLIC_SEED + 1)
    grads = [rng.standard_normal((4, 3)) * 3.0, rng.standard_normal((3, 3)) * 0.05, rng.standard_normal(3) * 0.7]
    total = float(np.sqrt(sum(np.sum(g * g) for g in grads)))
    thresholds = np.geomspace(total / 20, total * 3, 25)
    want_global = [_norm_after(ref.clip_grad_norm(grads, m)[0]) for m in thresholds]
    want_per_array = [_norm_after(ref.clip_grad_norm_per_array(grads, m)) for m in thresholds]
    return grads, total, thresholds, want_global, want_per_array


def clipping_plot(student, ref) -> tuple[str, str, dict]:
    grads, total, thresholds, want_global, want_per_array = _clipping_case(ref)
    figure = _figure("Clipping three arrays of very different norms", "max_norm", "norm of the clipped update",
                     "loglog", legend_below=False)
    _line(figure, thresholds, want_global, "reference clip_grad_norm", reference=True, color="tab:blue")
    _line(figure, thresholds, want_per_array, "reference clip_grad_norm_per_array", reference=True,
          color="tab:orange")
    note = ""
    for function, color in (("clip_grad_norm", "tab:blue"), ("clip_grad_norm_per_array", "tab:orange")):
        try:
            results = student.call_each(function, [(grads, float(m)) for m in thresholds])
            values = [_norm_after(result[0] if function == "clip_grad_norm" else result) for result in results]
            _line(figure, thresholds, values, f"your {function}", color=color)
        except Exception as exc:
            note += f" Your {function} failed ({type(exc).__name__})."
    caption = (f"Public inputs (seed {PUBLIC_SEED + 1}): three arrays, total norm {total:.2f}. Global clipping caps "
               "the update's norm at max_norm; per-array clipping caps each array, so the total can exceed it." + note)
    return "Clipping", caption, figure


@functools.lru_cache(maxsize=4)
def _truncation_case(ref):
    """The truncation picture's public inputs and the reference's curves on them, computed once per process."""
    rng = np.random.default_rng(PUBLIC_SEED + 2)
    N, T, D, H = 2, 24, 3, 6
    x = rng.standard_normal((N, T, D))
    h0 = rng.standard_normal((N, H)) * 0.3
    Wx = rng.standard_normal((D, H)) * 0.5
    Wh = _orthogonal(rng, H)
    b = np.zeros(H)
    dh = np.zeros((N, T, H))
    dh[:, -1] = rng.standard_normal((N, H))
    cache = ref.rnn_forward(x, h0, Wx, Wh, b)[1]
    cases = [(k2, color, np.linalg.norm(ref.rnn_backward_truncated(dh, cache, 1, k2)[0], axis=(0, 2)) + 1e-30)
             for k2, color in ((4, "tab:blue"), (12, "tab:green"), (T, "tab:red"))]
    return (x, h0, Wx, Wh, b, dh, T), cases


def truncation_plot(student, ref) -> tuple[str, str, dict]:
    (x, h0, Wx, Wh, b, dh, T), cases = _truncation_case(ref)
    figure = _figure("Truncation: no gradient beyond k2 steps back", "time step t", "|dL/dx[:, t]|", "semilogy",
                     legend_below=True, ylim=(1e-12, None))
    steps, note = np.arange(T), ""
    for k2, color, want in cases:
        _line(figure, steps, want, f"reference TBPTT(1, {k2})", reference=True, color=color)
        try:
            _, cache = student.rnn_forward(x, h0, Wx, Wh, b)
            got = student.rnn_backward_truncated(dh, cache, 1, k2)[0]
            if isinstance(got, np.ndarray) and got.shape == x.shape:
                _line(figure, steps, np.linalg.norm(got, axis=(0, 2)) + 1e-30, f"yours, k2={k2}", color=color)
        except Exception as exc:
            note = f" Your rnn_backward_truncated failed ({type(exc).__name__})."
    caption = (f"Public inputs (seed {PUBLIC_SEED + 2}): loss at the last step only, orthogonal Wh. With TBPTT(1, k2) "
               "the gradient stops exactly k2 steps back (drawn at 1e-30 where it is zero)." + note)
    return "Truncated BPTT", caption, figure


# The functions a picture of "yours against the reference" is drawn for when one of their tests failed: the call
# on public inputs, and the names of what it returns. The student's outputs come back from the sandbox as plain
# arrays, validated by the codec (exact types, dtypes, shapes); nothing of the student's runs here.
COMPARED = {
    "rnn_backward": ("rnn_forward", ["dx", "dh0", "dWx", "dWh", "db"]),
    "rnn_step_backward": ("rnn_step_forward", ["dx", "dprev_h", "dWx", "dWh", "db"]),
    "rnn_forward": (None, ["h"]),
    "rnn_step_forward": (None, ["next_h"]),
}


def comparison_plot(student, ref, function: str) -> tuple[str, str, dict]:
    """Every entry of the student's outputs of `function` against the reference's on public inputs: on the
    diagonal where they agree; an output off the diagonal is the one to look at."""
    rng = np.random.default_rng(PUBLIC_SEED + 3)
    N, T, D, H = 2, 5, 3, 4
    x = rng.standard_normal((N, T, D))
    h0 = rng.standard_normal((N, H)) * 0.5
    Wx = rng.standard_normal((D, H)) * 0.5
    Wh = rng.standard_normal((H, H)) * 0.4
    b = rng.standard_normal(H) * 0.1
    dh = rng.standard_normal((N, T, H))
    forward, names = COMPARED[function]
    if function.startswith("rnn_step"):
        args = (x[:, 0], h0, Wx, Wh, b)
        want_forward = ref.rnn_step_forward(*args)
        backward_input = dh[:, 0]
    else:
        args = (x, h0, Wx, Wh, b)
        want_forward = ref.rnn_forward(*args)
        backward_input = dh
    if forward is None:
        want = [want_forward[0]]
        got = [getattr(student, function)(*args)[0]]
    else:
        want = list(getattr(ref, function)(backward_input, want_forward[1]))
        _, cache = getattr(student, forward)(*args)  # the student's own forward: a handle that stays in the sandbox
        got = list(getattr(student, function)(backward_input, cache))
    figure = _figure(f"Your {function} against the reference, entry by entry", "reference value", "your value",
                     "linear", legend_below=False)
    every = np.concatenate([np.ravel(w) for w in want])
    span = [float(every.min()), float(every.max())]
    _line(figure, span, span, "agreement (yours = reference)", reference=True, color="gray")
    off = []
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    for name, w, g, color in zip(names, want, got, colors):
        if not (isinstance(g, np.ndarray) and g.shape == w.shape and g.dtype.kind == "f" and np.all(np.isfinite(g))):
            off.append(f"{name}: shape {getattr(g, 'shape', type(g).__name__)}, expected {w.shape}"
                       if getattr(g, "shape", None) != w.shape else f"{name}: not finite floats")
            continue
        _line(figure, np.ravel(w), np.ravel(g), f"{name}", color=color, ls="none", marker="o", ms=4)
        if not np.allclose(g, w, rtol=1e-6, atol=1e-9):
            off.append(name)
    caption = (f"Public inputs (seed {PUBLIC_SEED + 3}, N={N}, T={T}, D={D}, H={H}, non-zero h0), not the graded "
               "ones. Each dot is one entry of an output: on the gray diagonal where yours agrees with the reference. "
               + (f"Off or missing here: {'; '.join(off)}." if off else "Here all agree: the failure is in a case "
                  "the page's table names."))
    return f"Your {function}", caption, figure


class _StopAfterTrouble:
    """Calls the student's functions until one hangs or crashes, then stops: a picture must not cost minutes."""

    def __init__(self, student):
        self._student, self._trouble = student, None

    def call_each(self, name: str, calls: list[tuple]) -> list:
        """Many calls of one function in one round trip where the student is a sandbox (else one by one)."""
        if hasattr(type(self._student), "call_each"):
            return self._guarded(self._student.call_each)(name, calls)
        function = getattr(self, name)
        return [function(*args) for args in calls]

    def __getattr__(self, name):
        return self._guarded(getattr(self._student, name))

    def _guarded(self, function):

        def call(*args, **kwargs):
            if self._trouble:
                raise RuntimeError(self._trouble)
            try:
                return function(*args, **kwargs)
            except (StudentTimeout, StudentCrashed) as exc:
                self._trouble = str(exc)
                raise

        return call


def feedback_plots(student, ref, failed: set[str] = frozenset()) -> list[dict]:
    """[{title, caption, png}] for the page: first, for each function of COMPARED in `failed` (at most two), the
    student's outputs against the reference's; then the decay, clipping and truncation pictures. A plot that
    cannot be drawn is left out."""
    import functools

    student = _StopAfterTrouble(student)
    figures = []
    compared = [functools.partial(comparison_plot, function=f) for f in COMPARED if f in failed][:2]
    for make in (*compared, decay_plot, clipping_plot, truncation_plot):
        try:
            title, caption, figure = make(student, ref)
            figures.append({"title": title, "caption": caption, "png": _render(figure)})
        except Exception:  # a picture is a bonus: never let it cost a grade
            pass
    return figures
