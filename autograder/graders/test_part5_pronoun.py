"""Part 5: the long-range pronoun example. make_agreement_data is random by design, so it is graded by the
properties the README's contract fixes (layout, labels, determinism); one_hot and antecedent_gradient_ratio
against the reference. antecedent_gradient_ratio is graded on its own logic: it runs with the grader's stand-ins for
rnn_forward, rnn_backward and rnn_backward_truncated (their answers for exactly the calls its docstring prescribes,
no BPTT code), so a Part 1 or Part 4 bug it only calls is charged there, not twice; a ratio that gets the true value
with the student's own Part 1 and Part 4 functions passes too."""

from __future__ import annotations

import numpy as np

from autograder.vocabulary import (Case, GradingFailure, call, describe, expect_array, expect_float, expect_raises,
                               expect_unmodified, unpack)
from autograder.pytest_plugin import graded


def agreement_data(student, n, distance, seed, case):
    tokens, labels = unpack(call(student.make_agreement_data, n, distance, seed, case=case), ["tokens", "labels"],
                            "make_agreement_data", case)
    for name, value, shape in (("tokens", tokens, (n, distance + 2)), ("labels", labels, (n,))):
        if not isinstance(value, np.ndarray) or value.dtype != np.int64:
            raise GradingFailure(f"{name} in {case}: expected an int64 array, got {describe(value)}")
        if value.shape != shape:
            raise GradingFailure(f"{name} in {case}: wrong shape {value.shape}, expected {shape}")
    return tokens, labels


def check_layout(ref, tokens, labels, distance, case) -> None:
    names = np.arange(len(ref.NAMES))
    fillers = np.arange(len(ref.NAMES), len(ref.NAMES) + len(ref.FILLERS))
    if not np.all(np.isin(tokens[:, 0], names)):
        raise GradingFailure(f"tokens[:, 0] in {case}: must be name ids")
    if not np.all(np.isin(tokens[:, 1:distance + 1], fillers)):
        raise GradingFailure(f"tokens[:, 1:distance + 1] in {case}: must be filler ids")
    if not np.all(tokens[:, -1] == ref.VOCAB.index(ref.QUERY)):
        raise GradingFailure(f"tokens[:, -1] in {case}: must be the QUERY id")
    if not np.array_equal(labels, (tokens[:, 0] >= len(ref.NAMES) // 2).astype(np.int64)):
        raise GradingFailure(f"labels in {case}: must be 0 for the first half of NAMES ('he'), 1 otherwise")


@graded("make_agreement_data", "layout: a name, `distance` fillers, the query token; labels from the name")
def test_layout(student, ref, context):
    seed = int(context.rng("agreement").integers(1000))
    for n, distance in [(64, 5), (np.int64(40), 0), (8, np.int32(30))]:
        case = Case(f"n={n}, distance={distance}, seed={seed} (numpy integers in some cases)")
        tokens, labels = agreement_data(student, n, distance, seed, case)
        check_layout(ref, tokens, labels, distance, case)


@graded("make_agreement_data", "names and fillers drawn at random, both labels present, same seed same data")
def test_randomness(student, ref):
    case = Case("n=400, distance=6, seeds 3 and 4")
    a = agreement_data(student, 400, 6, 3, case)
    b = agreement_data(student, 400, 6, 3, case)
    c = agreement_data(student, 400, 6, 4, case)
    if not all(np.array_equal(x, y) for x, y in zip(a, b)):
        raise GradingFailure("make_agreement_data: the same seed must give the same data")
    if np.array_equal(a[0], c[0]):
        raise GradingFailure("make_agreement_data: different seeds gave the same tokens")
    if len(np.unique(a[0][:, 0])) < len(ref.NAMES) or len(np.unique(a[0][:, 1:-1])) < len(ref.FILLERS) // 2:
        raise GradingFailure("make_agreement_data: names and fillers should be drawn from all of NAMES and FILLERS")
    if not 0.3 < a[1].mean() < 0.7:
        raise GradingFailure("make_agreement_data: labels should be balanced (names drawn uniformly)")


VOCABULARY = ["NAMES", "FILLERS", "QUERY", "VOCAB"]


@graded("make_agreement_data", "right data, and the vocabulary it draws from (NAMES, FILLERS, QUERY, VOCAB) left "
        "unchanged")
def test_agreement_unmodified(student, ref, context):
    n, distance, seed = 200, 5, int(context.rng("agreement unmodified").integers(1000))
    case = Case(f"n={n}, distance={distance}, seed={seed}")
    result, before, after = call(student.make_agreement_data.reading(VOCABULARY), n, distance, seed, case=case)
    for name, was, now in zip(VOCABULARY, before, after):
        if type(was) in (list, str) and was != now:  # (anything else, e.g. a student object, is not compared)
            raise GradingFailure(f"make_agreement_data changed {name} in {case}; leave the vocabulary as it is")
    tokens, labels = unpack(result, ["tokens", "labels"], "make_agreement_data", case)
    for name, value, shape in (("tokens", tokens, (n, distance + 2)), ("labels", labels, (n,))):
        if not isinstance(value, np.ndarray) or value.dtype != np.int64 or value.shape != shape:
            raise GradingFailure(f"{name} in {case}: expected an int64 array of shape {shape}, got {describe(value)}")
    check_layout(ref, tokens, labels, distance, case)


@graded("make_agreement_data", "raises ValueError for n < 1, distance < 0 and non-integer arguments (counts once "
        "the valid-input tests pass)", error_handling=True)
def test_agreement_value_errors(student):
    for args in [(0, 3), (5, -1), (5.0, 3), (5, 2.5), (True, 3)]:
        expect_raises(student.make_agreement_data, args, "ValueError", f"make_agreement_data{args}")


@graded("one_hot", "one-hot encoding of random token arrays")
def test_one_hot(student, ref, context, tol):
    rng = context.rng("one hot")
    for i, (N, T, V) in enumerate([(3, 5, 25), (1, 1, 4), (4, 9, 7)], 1):
        tokens = rng.integers(0, V, size=(N, T))
        case = Case(f"case {i} (tokens of shape {(N, T)}, vocab_size={V})")
        expect_array(call(student.one_hot, tokens, V, case=case), ref.one_hot(tokens, V), "one_hot", case, tol)


@graded("one_hot", "right encoding, tokens left unchanged", points=0.5)
def test_one_hot_unmodified(student, ref, context, tol):
    tokens = context.rng("one hot unmodified").integers(0, 11, size=(4, 6))
    case = Case("tokens of shape (4, 6), vocab_size=11")
    result, after = call(student.one_hot.echo, tokens, 11, case=case)
    expect_unmodified(after[:1], [tokens], ["tokens"], "one_hot", case)
    expect_array(result, ref.one_hot(tokens, 11), "one_hot", case, tol)


@graded("one_hot", "raises ValueError for ids outside [0, vocab_size) and for float tokens (counts once the "
        "valid-input tests pass)", error_handling=True)
def test_one_hot_errors(student):
    for tokens, V, label in [(np.array([[0, 5]]), 5, "an id equal to vocab_size"),
                             (np.array([[-1, 2]]), 5, "a negative id"),
                             (np.array([[0.0, 1.0]]), 5, "a float array")]:
        expect_raises(student.one_hot, (tokens, V), "ValueError", f"one_hot with {label}")


def ratio_cases(rng, ref) -> list[Case]:
    cases = []
    for i, (N, distance, H, scale) in enumerate([(3, 4, 6, 1.0), (2, 10, 5, 1.5), (4, 7, 8, 0.6)], 1):
        tokens, _ = ref.make_agreement_data(N, distance, seed=int(rng.integers(10_000)))
        x = ref.one_hot(tokens, len(ref.VOCAB))
        D = x.shape[2]
        inputs = {"x": x, "h0": rng.standard_normal((N, H)) * 0.3, "Wx": rng.standard_normal((D, H)) * 0.5,
                  "Wh": rng.standard_normal((H, H)) * scale / np.sqrt(H), "b": rng.standard_normal(H) * 0.1,
                  "dout": rng.standard_normal((N, H))}
        cases.append(Case(f"case {i} (N={N}, distance={distance}, H={H})", inputs))
    return cases


def ratio_args(case):
    p = case.inputs
    return p["x"], p["h0"], p["Wx"], p["Wh"], p["b"], p["dout"]


def stand_in_tables(ref, case) -> dict:
    """The grader's answers for the calls antecedent_gradient_ratio makes on this case (its docstring: rnn_forward
    of the inputs, then rnn_backward or rnn_backward_truncated(dh, cache, 1, k2) of dh = zeros except dh[:, -1] =
    dout): the true states, full BPTT, and TBPTT for every k2 from 1 to T (one loss at the last step: k1 does not
    matter, k2 >= T is full BPTT)."""
    x, h0, Wx, Wh, b, dout = ratio_args(case)
    h, cache = ref.rnn_forward(x, h0, Wx, Wh, b)
    dh = np.zeros(h.shape)
    dh[:, -1] = dout
    T = x.shape[1]
    return {"inputs": [x, h0, Wx, Wh, b], "h": h, "dh": dh, "full": list(ref.rnn_backward(dh, cache)),
            "truncated": [list(ref.rnn_backward_truncated(dh, cache, 1, k2)) for k2 in range(1, T + 1)]}


RATIO_INPUTS = ["x", "h0", "Wx", "Wh", "b", "dout"]


def expect_ratio(student, ref, case, tables, extra, tol, inputs_unchanged=False) -> None:
    """The ratio is right (and, with `inputs_unchanged`, its inputs come back bit-identical) when run with the
    grader's stand-ins for the Part 1/4 functions it calls, or else with the student's own. When the stand-ins
    answered every call and the result is still wrong, the message says the mistake is in this function."""
    args = (*ratio_args(case), *extra)
    want = ref.antecedent_gradient_ratio(*args)
    failures = []
    for run in (student.antecedent_gradient_ratio.with_stand_ins(tables), student.antecedent_gradient_ratio.echo):
        try:
            result, after = call(run, *args, case=case)
        except GradingFailure as exc:  # with the stand-ins: e.g. calls its docstring does not prescribe
            failures.append((False, exc))
            continue
        try:
            if inputs_unchanged:
                expect_unmodified(after[:6], list(ratio_args(case)), RATIO_INPUTS, "antecedent_gradient_ratio", case)
            expect_float(result, want, "the ratio", case, tol)
            return
        except GradingFailure as exc:
            failures.append((True, exc))
    (answered, with_stand_ins), (_, own) = failures
    if answered:
        raise GradingFailure(f"{with_stand_ins}; also when computed with correct rnn_forward, rnn_backward and "
                             "rnn_backward_truncated in place of yours, so the mistake is in this function")
    raise own


@graded("antecedent_gradient_ratio", "full BPTT ratio on one-hot agreement sequences")
def test_ratio_full(student, ref, context, tol):
    for case in ratio_cases(context.rng("ratio"), ref):
        expect_ratio(student, ref, case, stand_in_tables(ref, case), (), tol)


@graded("antecedent_gradient_ratio", "truncated: 0.0 when k2 < T, the full ratio when k2 >= T")
def test_ratio_truncated(student, ref, context, tol):
    for case in ratio_cases(context.rng("ratio truncated"), ref):
        tables = stand_in_tables(ref, case)
        T = case.inputs["x"].shape[1]
        for k2 in (2, T - 1, T, T + 3):
            expect_ratio(student, ref, Case(f"{case.label}, k2={k2}", case.inputs), tables, (k2,), tol)


@graded("antecedent_gradient_ratio", "right ratio, inputs left unchanged", points=1.0)
def test_ratio_unmodified(student, ref, context, tol):
    case = ratio_cases(context.rng("ratio unmodified"), ref)[1]
    expect_ratio(student, ref, case, stand_in_tables(ref, case), (), tol, inputs_unchanged=True)
