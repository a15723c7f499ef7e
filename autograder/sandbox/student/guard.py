"""The by-hand rule, on the student side (standard library only; see worker.py).

course.yml's `by_hand` names the functions that must compute their gradients with numpy, by hand: the point of the
assignment is deriving and writing BPTT. While one of them runs (a grader's call, or a public check cell that
calls it), torch autograd is unavailable in this process: every way into it raises AutogradForbidden, naming the
function and the entry point, and the first such entry point is remembered for the grader (`hit`).

How: install() runs once torch is imported and before any student code (in the zygote, or in a cold worker right
after its preloads). It wraps each entry point below and puts the wrapper in place of the original in every
loaded torch module that holds it (so `from torch.autograd import grad` done by torch itself, or by student code
at import time, gets the wrapper too). Underneath all of reverse mode is one engine object, replaced by a guarded
one; forward mode needs a dual level, whose entry is guarded; and the graph is not even recorded: grad mode is
off during a by-hand call and cannot be turned on. Forward passes and the notebooks' demonstrations keep torch
and its autograd: the rule is active only while a by-hand function runs.

Student code runs in this process and could, with enough effort, dig the originals out (closures, ctypes): this
raises the bar from one `.backward()` to deliberate tampering, which the instructor can see in the code."""

import sys

_state = {"active": None, "depth": 0, "hit": None}


class AutogradForbidden(RuntimeError):
    """Raised inside a by-hand function that calls torch autograd."""


def _refuse(entry):
    function = _state["active"]
    if _state["hit"] is None:
        _state["hit"] = entry
    if entry in _SPAWNS:
        raise AutogradForbidden(f"{function} must compute the gradient by hand, in this process: it started "
                                f"{entry}, which the rule does not reach. Write the backward pass with numpy.")
    raise AutogradForbidden(f"{function} must compute the gradient by hand: torch autograd was called ({entry}). "
                            "Write the backward pass with numpy; autograd is for checking your answer outside it.")


# (module, attribute, what it starts): a thread (where grad mode is on again) or a process (where no rule holds)
# started by a by-hand function would be a way around the rule; honest numpy code starts neither.
_SPAWN_POINTS = (("_thread", "start_new_thread", "a thread"), ("threading", "_start_new_thread", "a thread"),
                 ("os", "fork", "a process"), ("os", "forkpty", "a process"), ("os", "posix_spawn", "a process"),
                 ("os", "posix_spawnp", "a process"), ("_posixsubprocess", "fork_exec", "a process"),
                 ("subprocess", "_fork_exec", "a process"),
                 ("os", "system", "a process"))
_SPAWNS = {entry for _, _, entry in _SPAWN_POINTS}
_spawn_guarded = []


def install_spawn_guard():
    """While a by-hand function runs, no new thread or process. Idempotent; needs no torch."""
    if _spawn_guarded:
        return
    import importlib

    for module_name, attribute, entry in _SPAWN_POINTS:
        try:  # threading and subprocess bind the builtin modules' functions when first imported: patched by then
            module = (sys.modules.get(module_name) if module_name in ("threading", "subprocess")
                      else importlib.import_module(module_name))
            original = getattr(module, attribute)
        except (ImportError, AttributeError):
            continue
        setattr(module, attribute, _guarded(original, entry))
    _spawn_guarded.append(True)


def _guarded(original, entry, allowed=None):
    """`original`, refused while the rule holds (unless `allowed(*args, **kwargs)` says this call may go)."""
    def guarded(*args, **kwargs):
        if _state["active"] is not None and (allowed is None or not allowed(*args, **kwargs)):
            _refuse(entry)
        return original(*args, **kwargs)

    guarded.__name__ = getattr(original, "__name__", entry)
    guarded.__qualname__ = getattr(original, "__qualname__", entry)
    guarded.__doc__ = getattr(original, "__doc__", None)
    return guarded


def _guarded_engine(engine):
    """Stands in for torch's autograd engine (Variable._execution_engine): every backward pass goes through it. The
    real engine stays in this closure: as an attribute, `Variable._execution_engine._engine` would hand it out."""

    class GuardedEngine:
        __slots__ = ()

        def run_backward(self, *args, **kwargs):
            if _state["active"] is not None:
                _refuse("the autograd engine")
            return engine.run_backward(*args, **kwargs)

        def queue_callback(self, *args, **kwargs):
            if _state["active"] is not None:
                _refuse("the autograd engine")
            return engine.queue_callback(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(engine, name)

    return GuardedEngine()


# (module, attribute, name in messages): the public ways into autograd. Each is also replaced wherever torch
# itself imported it by name.
_ENTRY_POINTS = (
    ("torch.autograd", "backward", "torch.autograd.backward"),
    ("torch.autograd", "grad", "torch.autograd.grad"),
    ("torch.autograd.graph", "_engine_run_backward", "the autograd engine"),
    ("torch.autograd.functional", "vjp", "torch.autograd.functional.vjp"),
    ("torch.autograd.functional", "jvp", "torch.autograd.functional.jvp"),
    ("torch.autograd.functional", "jacobian", "torch.autograd.functional.jacobian"),
    ("torch.autograd.functional", "hessian", "torch.autograd.functional.hessian"),
    ("torch.autograd.functional", "vhp", "torch.autograd.functional.vhp"),
    ("torch.autograd.functional", "hvp", "torch.autograd.functional.hvp"),
    ("torch.autograd.forward_ad", "make_dual", "torch.autograd.forward_ad"),
    ("torch.autograd.forward_ad", "enter_dual_level", "torch.autograd.forward_ad"),
    ("torch._C", "_enter_dual_level", "torch.autograd.forward_ad"),
    ("torch._C", "_set_grad_enabled", "torch.enable_grad / set_grad_enabled"),
    ("torch.func", "grad", "torch.func.grad"),
    ("torch.func", "grad_and_value", "torch.func.grad_and_value"),
    ("torch.func", "vjp", "torch.func.vjp"),
    ("torch.func", "jvp", "torch.func.jvp"),
    ("torch.func", "jacrev", "torch.func.jacrev"),
    ("torch.func", "jacfwd", "torch.func.jacfwd"),
    ("torch.func", "hessian", "torch.func.hessian"),
    ("torch.func", "linearize", "torch.func.linearize"),
)
_ALLOWED_WHILE_ACTIVE = {"_set_grad_enabled": lambda mode=None, *a, **k: not mode}  # turning grad off stays allowed
_installed = []


def install():
    """Guards torch's autograd (imported by now); returns False where torch is not importable. Idempotent."""
    if _installed:
        return True
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    import importlib

    replacements = {}
    for module_name, attribute, entry in _ENTRY_POINTS:
        try:
            module = importlib.import_module(module_name)
            original = getattr(module, attribute)
        except (ImportError, AttributeError):  # another torch version: guard what exists
            continue
        if id(original) in replacements:
            continue
        replacements[id(original)] = (original, _guarded(original, entry, _ALLOWED_WHILE_ACTIVE.get(attribute)))
    # Tensor methods: backward, and retain_grad and register_hook, which only serve a backward pass (with grad mode
    # off they would fail with torch's own message first; this names the rule instead).
    methods = {method: getattr(torch.Tensor, method) for method in ("backward", "retain_grad", "register_hook")}
    for method, original in methods.items():
        replacements[id(original)] = (original, _guarded(original, f"Tensor.{method}"))
    _replace_everywhere(replacements)
    for method, original in methods.items():
        setattr(torch.Tensor, method, replacements[id(original)][1])

    variable_module = importlib.import_module("torch.autograd.variable")
    guarded_engine = _guarded_engine(variable_module.Variable.__dict__["_execution_engine"])
    variable_module.Variable._execution_engine = guarded_engine
    # A new engine object made from the class would be unguarded: the class's names give the guarded one.
    factory = lambda *a, **k: guarded_engine  # noqa: E731
    torch._C._ImperativeEngine = variable_module.ImperativeEngine = factory
    _installed.append(True)
    return True


class _InstallAfterImport:
    """On sys.meta_path where torch is not preloaded: installs the guard the moment student code imports torch,
    before that import statement returns."""

    def find_spec(self, name, path=None, target=None):
        if name != "torch" or _installed:
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_guard(module):
            exec_module(module)
            install()

        spec.loader.exec_module = exec_and_guard
        return spec


def install_when_imported():
    """install() now if torch is loaded, else as soon as it is; and the guard on new threads and processes."""
    install_spawn_guard()
    if not install() and importable("torch"):
        sys.meta_path.insert(0, _InstallAfterImport())


def importable(name):
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _replace_everywhere(replacements):
    """Puts each wrapper where any loaded torch module holds the original by name."""
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "torch" or name.startswith(("torch.", "functorch"))):
            continue
        try:
            namespace = vars(module)
        except TypeError:
            continue
        for key, value in list(namespace.items()):
            found = replacements.get(id(value))
            if found is not None and found[0] is value:
                try:
                    setattr(module, key, found[1])
                except (AttributeError, TypeError):
                    pass


class active:
    """`with active("rnn_backward"):` the by-hand rule holds (nested calls keep the outermost name). With grad_off
    (the grader's own calls), grad mode is also off, so no graph is recorded to walk by hand; the notebooks' checks
    leave it as it is: a student's torch_truncated_grads may run its own rnn_step_forward on tensors."""

    def __init__(self, function, grad_off=False):
        self.function = function
        self.grad_off = grad_off
        self._grad = None

    def __enter__(self):
        if _state["depth"] == 0:
            _state["active"], _state["hit"] = self.function, None
            torch = sys.modules.get("torch")
            if self.grad_off and torch is not None and _installed:
                self._grad = torch.is_grad_enabled()
                torch._C._set_grad_enabled(False)  # the wrapper: turning off is allowed
        _state["depth"] += 1
        return self

    def __exit__(self, *exc):
        _state["depth"] -= 1
        if _state["depth"] == 0:
            _state["active"] = None
            if self._grad is not None:
                sys.modules["torch"]._C._set_grad_enabled(self._grad)
        return False


def hit():
    """The entry point a by-hand function used during the last by-hand call (None: it kept the rule)."""
    return _state["hit"]


def wrap(function, name):
    """`function` under the rule while it runs: for the student's namespace, so that the notebooks' public check
    cells, which call the student's functions by name, apply it as the grader does."""
    if getattr(function, "__autograder_by_hand__", None) == name or not callable(function):
        return function

    def by_hand(*args, **kwargs):
        with active(name):
            return function(*args, **kwargs)

    for attribute in ("__name__", "__qualname__", "__doc__", "__module__"):
        try:
            setattr(by_hand, attribute, getattr(function, attribute))
        except (AttributeError, TypeError):
            pass
    by_hand.__wrapped__ = function
    by_hand.__autograder_by_hand__ = name
    return by_hand
