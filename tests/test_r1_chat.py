"""The R1 data path (issue 30, defects 7, 10, 11): what an R1 model is trained on
is what it writes after its own template's generation prompt, in both template
variants (the wheel's, ending `<｜Assistant｜>`, and the current Hugging Face one,
ending `<｜Assistant｜><think>\\n`); one instruction per profile, trained and
evaluated alike; one BOS in what llama.cpp decodes from."""
import json
import shutil
import urllib.request
from pathlib import Path

import pytest

from conftest import LLAMA_CPP, require_llama_cpp
from fintune.data.prepare import problem_to_chat
from fintune.data.quant import generate_set
from fintune.scoring.extract import extract, score
from fintune.eval.runner import build_prompt
from fintune.prompts import INSTRUCTIONS, user_prompt
from fintune.templates import R1_EOS, ThinkTagError, detect, r1_reply, tokenize_example

QUESTION = "What is 2% of 50?"
SOLUTION = "2% x 50 = 0.02 x 50\n= 1\nFinal answer: 1"
VARIANTS = ["r1_tokenizer", "r1_tokenizer_think"]


def _bos_free(tok, text: str) -> str:
    assert text.startswith(tok.bos_token)
    return text[len(tok.bos_token):]


@pytest.mark.parametrize("variant", VARIANTS)
def test_trained_text_is_what_the_model_writes_after_its_generation_prompt(variant, request):
    """Defect 7: on 91f3192 the completion was the solution as is, then EOS: with the
    current template the model learned to stop inside the <think> block it never
    closed (`"</think>" in written` fails); with the wheel's it never reasoned in one."""
    tok = request.getfixturevalue(variant)
    fam = detect(tok.chat_template)
    user = [{"role": "user", "content": user_prompt(QUESTION, instruction="boxed")}]
    reply = {"role": "assistant", "content": "2% x 50 = 0.02 x 50\n= 1\n\\boxed{1}"}
    prompt, completion = fam.split(tok, user, reply)
    assert prompt == tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    # what the model writes after "<｜Assistant｜>", whichever template prompted it
    written = (prompt + completion).split("<\uff5cAssistant\uff5c>", 1)[1]
    assert written == "<think>\n2% x 50 = 0.02 x 50\n= 1\n</think>\n\n\\boxed{1}" + R1_EOS
    # the answer part is what the model's own template renders for that turn in history
    history = tok.apply_chat_template(user + [{"role": "assistant", "content": written[:-len(R1_EOS)]}],
                                      tokenize=False)
    assert history.split("<\uff5cAssistant\uff5c>", 1)[1] == written.split("</think>", 1)[1]
    ex = tokenize_example(tok, fam, user + [reply])
    first = next(i for i, l in enumerate(ex["labels"]) if l != -100)
    assert tok.decode(ex["input_ids"][:first]) == prompt and tok.decode(ex["input_ids"][first:]) == completion
    assert ex["input_ids"].count(tok.bos_token_id) == 1


@pytest.mark.parametrize("content, reasoning, answer", [
    # a worked solution: the steps reason, the answer line answers
    (SOLUTION, "2% x 50 = 0.02 x 50\n= 1", "Final answer: 1"),
    # the user's own block is kept; whitespace around it takes the model's shape
    ("<think>\nrisk = 2% of 10,000\n</think>\nFinal answer: 200", "risk = 2% of 10,000", "Final answer: 200"),
    ("  <think>a\nb</think>The answer is 3.", "a\nb", "The answer is 3."),
    # no answer line: an answer without reasoning, the empty block DeepSeek's models write
    ("Beta measures a stock's sensitivity to the market.", "", "Beta measures a stock's sensitivity to the market."),
])
def test_r1_reply_shape(content, reasoning, answer):
    block = f"<think>\n{reasoning}\n</think>" if reasoning else "<think>\n\n</think>"
    assert r1_reply(content) == f"{block}\n\n{answer}"


@pytest.mark.parametrize("content, name", [
    ("<think>\nstill thinking", "think_unclosed"),
    ("reasoning\n</think>\n\nFinal answer: 1", "think_unopened"),
    ("</think> x <think> y", "think_unopened"),
    ("<think> a <think> b </think> c </think> d", "think_nested"),
    ("<think> a </think> b <think> c </think> d", "think_doubled"),
    ("<think> a </think> b </think> c", "think_doubled"),
    ("Sure. <think> a </think> b", "think_not_first"),
])
def test_bad_think_tags_are_named(content, name):
    with pytest.raises(ThinkTagError) as e:
        r1_reply(content)
    assert e.value.name == name


def test_user_rows_with_bad_think_tags_go_to_rejects_with_a_named_reason(tmp_path):
    """On 91f3192 these rows were kept and trained (the reject list held none)."""
    from test_data_sources import GOOD, _lines, _msgs, _run

    bad = {"think_unclosed": "<think>\nstill thinking", "think_unopened": "reasoning\n</think>\nok",
           "think_nested": "<think>a<think>b</think></think>c", "think_doubled": "<think>a</think>b<think>c</think>d"}
    rows = [GOOD] + [_msgs(("user", f"Question {k}?"), ("assistant", v)) for k, v in bad.items()] + \
        [_msgs(("user", "Kept?"), ("assistant", "<think>\nfine\n</think>\n\nYes."))]
    out, rejects, stats = _run(tmp_path, {"u.jsonl": _lines(*rows)}, token_check=False)
    think = {r["where"].rsplit("/", 1)[-1]: r for r in rejects if r["field"].startswith("messages[")}
    assert sorted(think) == ["u.jsonl:2", "u.jsonl:3", "u.jsonl:4", "u.jsonl:5"]
    for (name, _), where in zip(bad.items(), sorted(think)):
        assert think[where]["reason"].startswith(name) and think[where]["field"] == "messages[1].content"
        assert stats["counts"][f"think_tags:{name}"] == 1
    kept = [json.loads(l) for l in (out / "train.jsonl").read_text().splitlines()]
    assert any(r["messages"][-1]["content"].startswith("<think>\nfine") for r in kept)
    assert stats["counts"]["rejected:u.jsonl"] == 4


def _held_item(p):
    return {"id": "x", "question": p.question, "context": None}


@pytest.mark.parametrize("instruction", INSTRUCTIONS.names())
@pytest.mark.parametrize("tok_fixture", ["tokenizer", "r1_tokenizer"])
def test_eval_asks_as_training_did(instruction, tok_fixture, request):
    """Defect 11: on 91f3192 R1 was trained with the `Final answer:` instruction and
    evaluated with the \\boxed{} one (build_prompt took no instruction)."""
    tok = request.getfixturevalue(tok_fixture)
    p = generate_set(1, seed=3)[0]
    row = problem_to_chat(p, 0, instruction=instruction)
    trained_prompt = tok.apply_chat_template(row["messages"][:1], tokenize=False, add_generation_prompt=True)
    assert build_prompt(tok, _held_item(p), False, instruction) == trained_prompt
    assert INSTRUCTIONS.get(instruction).text in trained_prompt


def test_boxed_profile_trains_a_boxed_answer_the_scorer_reads(r1_tokenizer_think):
    p = generate_set(1, seed=5)[0]
    row = problem_to_chat(p, 0, instruction="boxed")
    assert "Final answer" not in row["messages"][1]["content"]
    fam = detect(r1_tokenizer_think.chat_template)
    prompt, completion = fam.split(r1_tokenizer_think, row["messages"][:1], row["messages"][1])
    reply = completion[:-len(R1_EOS)]  # what the eval gets back: EOS ends generation
    ex = extract(reply, open_think=prompt.endswith("<think>\n"))
    assert ex.method == "boxed" and score(ex, float(p.answer)).correct


@pytest.mark.parametrize("profile", ["r1-distill-qwen-14b-24gb", "r1-distill-qwen-7b-h100"])
def test_r1_profiles_ask_for_boxed(profile):
    from fintune.config import build_config, load_yaml

    cfg = build_config(load_yaml(Path(__file__).parent.parent / "configs" / f"{profile}.yaml"))
    assert cfg.data.instruction == "boxed"


def test_unknown_instruction_lists_the_valid_ones():
    from fintune.config import ConfigError, build_config

    with pytest.raises(ConfigError, match="boxed, final_answer"):
        build_config(overrides={"instruction": "shout"})


# ---- defect 10: one BOS in what llama.cpp decodes from ---------------------------------

def _tokenize(server, text: str) -> list[int]:
    """llama-server's own tokenization of a prompt, as /completion does it (add_special:
    BOS where the GGUF says add_bos_token; tools/server/server-context.cpp post_tokenize)."""
    body = json.dumps({"content": text, "add_special": True, "parse_special": True}).encode()
    req = urllib.request.Request(server.url + "/tokenize", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())["tokens"]


@pytest.mark.parametrize("model", ["tiny_qwen2_r1_dir", "tiny_llama_dir"])
def test_gguf_eval_prompt_has_exactly_one_bos(model, request, tmp_path, monkeypatch):
    """On 91f3192 the GGUF runner sent the rendered prompt (BOS text first) to
    llama.cpp, which adds its own BOS: two for R1 (the count assertion fails)."""
    require_llama_cpp()
    from transformers import AutoTokenizer

    from fintune.eval.runner import GGUFRunner
    from fintune.gguf import read_header
    from fintune.llama_cpp import Completion, LlamaCpp, LlamaServer

    model_dir = request.getfixturevalue(model)
    lc = LlamaCpp(LLAMA_CPP)
    gguf = tmp_path / "m.gguf"
    lc.convert(model_dir, gguf, "f16")
    tok = AutoTokenizer.from_pretrained(model_dir)
    prompt = build_prompt(tok, {"question": QUESTION}, False)
    runner = GGUFRunner(gguf, LLAMA_CPP, model_dir, parallel=1)
    sent = []
    monkeypatch.setattr(runner.lc, "complete", lambda g, p, *a, **k: sent.append(p) or Completion("ok", 1, 0.1))
    runner.generate([prompt], 4)
    with LlamaServer(lc, gguf, slots=1) as server:
        ids = _tokenize(server, sent[0])
    expected = tok(prompt, add_special_tokens=False)["input_ids"]
    if read_header(gguf).get("tokenizer.ggml.add_bos_token") and not prompt.startswith(tok.bos_token or "\0"):
        expected = [tok.bos_token_id] + expected  # the template has no BOS; llama.cpp adds the one
    assert ids == expected
    if model == "tiny_qwen2_r1_dir":
        assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id


@pytest.mark.parametrize("variant", VARIANTS)
def test_gguf_carries_the_chat_template_the_adapter_was_trained_with(variant, request, tmp_path, tiny_qwen2_r1_dir):
    """Defect 12: Ollama (server/images.go shouldPreferChatTemplate, v0.33) renders an R1
    GGUF with its embedded Jinja template, not the Modelfile TEMPLATE, because that
    template offers more (tools, thinking) than the Go one. So the GGUF must carry the
    template the model was trained in: the one saved with the adapter, in either variant."""
    require_llama_cpp()
    from transformers import AutoTokenizer

    from fintune.gguf import read_header
    from fintune.llama_cpp import LlamaCpp

    model_dir = tmp_path / "merged"
    shutil.copytree(tiny_qwen2_r1_dir, model_dir)
    request.getfixturevalue(variant).save_pretrained(model_dir)  # as the adapter dir's tokenizer reaches the merge
    trained = AutoTokenizer.from_pretrained(model_dir).chat_template
    gguf = tmp_path / "m.gguf"
    LlamaCpp(LLAMA_CPP).convert(model_dir, gguf, "f16")
    assert read_header(gguf)["tokenizer.chat_template"] == trained
    assert trained.endswith("{{'<｜Assistant｜><think>\\n'}}{% endif %}") == variant.endswith("think")


def test_llama_cpp_context_holds_the_prompt_and_every_new_token(r1_tokenizer, tokenizer):
    """llama-server's context per slot was 1024 tokens: an R1 profile's replies (2048 new
    tokens) were cut at about 900. The CPU default keeps the 1024 it was measured with."""
    from fintune.eval.runner import GGUFRunner, build_prompt

    item = {"question": "A bond pays a 5% coupon on $1,000 face value for 10 years. What is its price at 6%?"}
    runner = GGUFRunner.__new__(GGUFRunner)  # context_size reads only the tokenizer
    for tok, n, floor_kept in ((r1_tokenizer, 2048, False), (tokenizer, 400, True)):
        runner.tokenizer = tok
        prompt = build_prompt(tok, item, True, "boxed")
        ctx = runner.context_size([prompt], n)
        assert ctx >= len(tok(prompt, add_special_tokens=False)["input_ids"]) + n + 1
        assert (ctx == 1024) is floor_kept
