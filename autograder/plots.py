"""Pictures for a student's feedback page, drawn from PUBLIC demonstration inputs only (fixed seeds printed on the
page, never the hidden test inputs): their hidden_grad_norms curves against the reference and the bound, their
clipping against torch's rule, and their truncated gradients against the reference. Each picture is a PNG
embedded in the page as base64, so the page opens without a network."""

from __future__ import annotations

import base64
import collections
import hashlib
import io

import numpy as np

PUBLIC_SEED = 2024  # shown on the page: these inputs are public


# Rendering is most of a plot's cost (~80 ms each), and in a class most students draw the same curves (a right
# answer gives the reference's values to float32 precision). So a picture is rendered once per distinct content
# per worker process: the key is everything drawn (lines' data and styles, texts). Kept to a bounded size.
_RENDERED: "collections.OrderedDict[str, str]" = collections.OrderedDict()
_RENDERED_MAX = 256


def _content_key(fig) -> str:
    digest = hashlib.sha256()
    for ax in fig.axes:
        texts = [ax.get_title(), ax.get_xlabel(), ax.get_ylabel(), ax.get_xscale(), ax.get_yscale(),
                 repr(ax.get_ylim()), repr(ax.get_xlim())]
        legend = ax.get_legend()
        if legend is not None:
            texts += [t.get_text() for t in legend.get_texts()]
        digest.update("\0".join(texts).encode())
        for line in ax.get_lines():
            digest.update(f"{line.get_label()}|{line.get_color()}|{line.get_linestyle()}|{line.get_linewidth()}|"
                          f"{line.get_alpha()}".encode())
            digest.update(np.asarray(line.get_xydata(), dtype=np.float32).tobytes())
    return digest.hexdigest()


def _png(fig) -> str:
    key = _content_key(fig)
    if key in _RENDERED:
        _RENDERED.move_to_end(key)
        return _RENDERED[key]
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)  # fixed margins (_new_figure): bbox_inches="tight" renders twice
    _RENDERED[key] = png = base64.b64encode(buffer.getvalue()).decode("ascii")
    if len(_RENDERED) > _RENDERED_MAX:
        _RENDERED.popitem(last=False)
    return png


def _new_figure(plt, legend_below: bool):
    """A figure with fixed margins, room for a legend under the axes when asked."""
    fig, ax = plt.subplots(figsize=(6.5, 4.4 if legend_below else 3.8))
    fig.subplots_adjust(left=0.12, right=0.97, top=0.91, bottom=0.32 if legend_below else 0.14)
    return fig, ax


def _float32(curve: np.ndarray) -> np.ndarray:
    """What is drawn of a student's curve: float32 is far finer than a pixel, and equal answers then draw alike."""
    return np.asarray(curve, dtype=np.float32).astype(np.float64)


def _orthogonal(rng, H: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((H, H)))
    return q * np.sign(np.diag(r))


def _finite_curve(value, length: int):
    if isinstance(value, np.ndarray) and value.shape == (length,) and value.dtype.kind == "f":
        return value
    return None


def decay_plot(student, ref, plt):
    rng = np.random.default_rng(PUBLIC_SEED)
    N, T, D, H = 2, 30, 3, 8
    x = rng.standard_normal((N, T, D)) * 0.1
    h0 = np.zeros((N, H))
    Wx = rng.standard_normal((D, H)) * 0.5
    b = np.zeros(H)
    dh = np.zeros((N, T, H))
    dh[:, -1] = rng.standard_normal((N, H))
    Q = _orthogonal(rng, H)
    fig, ax = _new_figure(plt, legend_below=True)
    notes = []
    for rho, color in ((0.8, "tab:blue"), (1.0, "tab:green"), (1.2, "tab:red")):
        Wh = rho * Q
        want = ref.hidden_grad_norms(dh, ref.rnn_forward(x, h0, Wx, Wh, b)[1])
        ax.semilogy(want / want[-1], color=color, lw=3, alpha=0.35, label=f"reference, sigma_max={rho}")
        ax.semilogy(ref.jacobian_norm_bound(Wh, T), color=color, ls=":", label=f"bound, sigma_max={rho}")
        try:
            _, cache = student.rnn_forward(x, h0, Wx, Wh, b)
            got = _finite_curve(student.hidden_grad_norms(dh, cache), T)
        except Exception as exc:  # the student's code failed: say so on the page
            got, notes = None, notes + [f"sigma_max={rho}: {type(exc).__name__}"]
        if got is not None and got[-1] > 0 and np.all(np.isfinite(got)):
            ax.semilogy(_float32(got / got[-1]), color=color, lw=1.2, label=f"yours, sigma_max={rho}")
    ax.set_xlabel("time step t")
    ax.set_ylabel("norms[t] / norms[T-1]")
    ax.set_title("Gradient reaching each step (loss at the last step only)")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    caption = (f"Public inputs (seed {PUBLIC_SEED}): tanh RNN, Wh = rho * Q with Q orthogonal, small inputs. "
               "Thick pale lines: reference; thin lines: your hidden_grad_norms; dotted: jacobian_norm_bound.")
    if notes:
        caption += " Your curve is missing where your code failed (" + "; ".join(notes) + ")."
    return "How the gradient decays", caption, fig


def clipping_plot(student, ref, plt):
    rng = np.random.default_rng(PUBLIC_SEED + 1)
    grads = [rng.standard_normal((4, 3)) * 3.0, rng.standard_normal((3, 3)) * 0.05, rng.standard_normal(3) * 0.7]
    total = float(np.sqrt(sum(np.sum(g * g) for g in grads)))
    thresholds = np.geomspace(total / 20, total * 3, 25)
    norm_after = lambda arrays: float(np.sqrt(sum(np.sum(np.asarray(a, dtype=float) ** 2) for a in arrays)))
    fig, ax = _new_figure(plt, legend_below=False)
    ax.loglog(thresholds, [norm_after(ref.clip_grad_norm(grads, m)[0]) for m in thresholds], lw=3, alpha=0.35,
              color="tab:blue", label="reference clip_grad_norm")
    ax.loglog(thresholds, [norm_after(ref.clip_grad_norm_per_array(grads, m)) for m in thresholds], lw=3, alpha=0.35,
              color="tab:orange", label="reference clip_grad_norm_per_array")
    note = ""
    for function, color in (("clip_grad_norm", "tab:blue"), ("clip_grad_norm_per_array", "tab:orange")):
        try:
            values = []
            for m in thresholds:
                result = getattr(student, function)(grads, float(m))
                values.append(norm_after(result[0] if function == "clip_grad_norm" else result))
            ax.loglog(thresholds, _float32(values), color=color, lw=1.2, label=f"your {function}")
        except Exception as exc:
            note += f" Your {function} failed ({type(exc).__name__})."
    ax.set_xlabel("max_norm")
    ax.set_ylabel("norm of the clipped update")
    ax.set_title("Clipping three arrays of very different norms")
    ax.legend(fontsize=7)
    caption = (f"Public inputs (seed {PUBLIC_SEED + 1}): three arrays, total norm {total:.2f}. Global clipping caps "
               "the update's norm at max_norm; per-array clipping caps each array, so the total can exceed it." + note)
    return "Clipping", caption, fig


def truncation_plot(student, ref, plt):
    rng = np.random.default_rng(PUBLIC_SEED + 2)
    N, T, D, H = 2, 24, 3, 6
    x = rng.standard_normal((N, T, D))
    h0 = rng.standard_normal((N, H)) * 0.3
    Wx = rng.standard_normal((D, H)) * 0.5
    Wh = _orthogonal(rng, H)
    b = np.zeros(H)
    dh = np.zeros((N, T, H))
    dh[:, -1] = rng.standard_normal((N, H))
    fig, ax = _new_figure(plt, legend_below=True)
    note = ""
    for k2, color in ((4, "tab:blue"), (12, "tab:green"), (T, "tab:red")):
        want = ref.rnn_backward_truncated(dh, ref.rnn_forward(x, h0, Wx, Wh, b)[1], 1, k2)[0]
        ax.semilogy(np.linalg.norm(want, axis=(0, 2)) + 1e-30, color=color, lw=3, alpha=0.35,
                    label=f"reference TBPTT(1, {k2})")
        try:
            _, cache = student.rnn_forward(x, h0, Wx, Wh, b)
            got = student.rnn_backward_truncated(dh, cache, 1, k2)[0]
            if isinstance(got, np.ndarray) and got.shape == x.shape:
                ax.semilogy(_float32(np.linalg.norm(got, axis=(0, 2)) + 1e-30), color=color, lw=1.2,
                            label=f"yours, k2={k2}")
        except Exception as exc:
            note = f" Your rnn_backward_truncated failed ({type(exc).__name__})."
    ax.set_ylim(1e-12, None)
    ax.set_xlabel("time step t")
    ax.set_ylabel("|dL/dx[:, t]|")
    ax.set_title("Truncation: no gradient beyond k2 steps back")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    caption = (f"Public inputs (seed {PUBLIC_SEED + 2}): loss at the last step only, orthogonal Wh. With TBPTT(1, k2) "
               "the gradient stops exactly k2 steps back (drawn at 1e-30 where it is zero)." + note)
    return "Truncated BPTT", caption, fig


class _StopAfterTrouble:
    """Calls the student's functions until one hangs or crashes, then stops: a picture must not cost minutes."""

    def __init__(self, student):
        self._student, self._trouble = student, None

    def __getattr__(self, name):
        function = getattr(self._student, name)

        def call(*args, **kwargs):
            from autograder.sandbox import StudentCrashed, StudentTimeout

            if self._trouble:
                raise RuntimeError(self._trouble)
            try:
                return function(*args, **kwargs)
            except (StudentTimeout, StudentCrashed) as exc:
                self._trouble = str(exc)
                raise

        return call


def feedback_plots(student, ref) -> list[dict]:
    """[{title, caption, png}] for the page; a plot that cannot be drawn is left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    student = _StopAfterTrouble(student)
    figures = []
    for make in (decay_plot, clipping_plot, truncation_plot):
        try:
            title, caption, fig = make(student, ref, plt)
            figures.append({"title": title, "caption": caption, "png": _png(fig)})
            plt.close(fig)
        except Exception:  # a picture is a bonus: never let it cost a grade
            plt.close("all")
    return figures
