"""`minibert gradcheck FILE.py:FORWARD,BACKWARD`: a learner's own op, loaded from a file. The command passes a
correct backward (exit 0), catches the bugs learners make (exit 1, naming the input), and turns every mistake in
the command into one message and exit 2."""

from __future__ import annotations

import re
import textwrap

import pytest

from mini_bert import cli

LAYERNORM = '''
import numpy as np

def layernorm_forward(x, gamma, beta, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    rstd = 1.0 / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
    xhat = (x - mu) * rstd
    return xhat * gamma + beta, (xhat, rstd, gamma)

def layernorm_backward(dy, cache):
    xhat, rstd, gamma = cache
    dgamma, dbeta = (dy * xhat).sum(0), dy.sum(0)
    g = dy * gamma
    dx = rstd * (g - g.mean(-1, keepdims=True){XHAT_TERM})
    return dx, dgamma, dbeta
'''
CORRECT_TERM = " - xhat * (g * xhat).mean(-1, keepdims=True)"

SOFTMAX = '''
import numpy as np

SHAPES = {{"softmax_forward": [(3, 7)]}}

def softmax_forward(x):
    z = np.exp({CAST}(x - x.max(-1, keepdims=True)))
    y = z / z.sum(-1, keepdims=True)
    return y, y

def softmax_backward(dy, y):
    return y * (dy {SIGN} (dy * y).sum(-1, keepdims=True))
'''


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def gradcheck(*args):
    return cli.main(["gradcheck", *map(str, args)])


def test_a_correct_layernorm_passes(tmp_path, capsys):
    ops = write(tmp_path, "my_ops.py", LAYERNORM.replace("{XHAT_TERM}", CORRECT_TERM))
    assert gradcheck(f"{ops}:layernorm_forward,layernorm_backward", "--shape", "4,8", "--shape", "8",
                     "--shape", "8") == 0
    out = capsys.readouterr().out
    for name in ("x", "gamma", "beta"):
        assert any(line.startswith(name) and line.rstrip().endswith("ok") for line in out.splitlines()), out
    assert "passed" in out


def test_a_layernorm_backward_missing_the_variance_term_fails_on_x(tmp_path, capsys):
    ops = write(tmp_path, "my_ops.py", LAYERNORM.replace("{XHAT_TERM}", ""))
    assert gradcheck(f"{ops}:layernorm", "--shape", "4,8", "--shape", "8", "--shape", "8") == 1
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "FAIL" in rows["x"] and rows["gamma"].rstrip().endswith("ok") and rows["beta"].rstrip().endswith("ok")


@pytest.mark.parametrize("sign,code", [("-", 0), ("+", 1)])
def test_softmax_sign_bug_is_caught_with_shapes_from_the_file(tmp_path, capsys, sign, code):
    ops = write(tmp_path, "soft.py", SOFTMAX.format(CAST="", SIGN=sign))
    assert gradcheck(f"{ops}:softmax") == code
    out = capsys.readouterr().out
    assert "(3, 7)" in out and ("FAIL" in out) == (code == 1)


def test_float32_arithmetic_in_forward_is_refused_with_the_fix(tmp_path, capsys):
    ops = write(tmp_path, "soft.py", SOFTMAX.format(CAST="np.float32", SIGN="-"))
    assert gradcheck(f"{ops}:softmax") == 2
    err = capsys.readouterr().err
    assert "float32" in err and "float64" in err


@pytest.mark.parametrize("target,flags,message", [
    ("{dir}/missing.py:softmax", [], "does not exist"),
    ("{dir}/soft.py:softmax_forward,softmax_bwd", [], "no function 'softmax_bwd'.*softmax_backward"),
    ("{dir}/soft.py", [], "does not name the functions"),
    ("{dir}/soft.py:a,b,c", [], "two function names"),
    ("{dir}/soft.py:softmax", ["--shape", "3,x"], "bad shape '3,x'"),
    ("{dir}/soft.py:softmax", ["--shape", "3,0"], "bad shape"),
    ("{dir}/soft.py:softmax", ["--shape", "3", "--shape", "4"], "2 shapes for softmax_forward"),
    ("{dir}/ln.py:layernorm", [], "no input shapes for layernorm_forward.*--shape.*SHAPES"),
    ("{dir}/ln.py:layernorm", ["--shape", "4,8"], "gamma, beta have no value"),
])
def test_mistakes_exit_2_with_how_to_fix(tmp_path, capsys, target, flags, message):
    write(tmp_path, "soft.py", SOFTMAX.format(CAST="", SIGN="-"))
    write(tmp_path, "ln.py", LAYERNORM.replace("{XHAT_TERM}", CORRECT_TERM))
    assert gradcheck(target.format(dir=tmp_path), *flags) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert re.search(message, captured.err), captured.err
