"""Loss masks from the chat template: exactly the last assistant turn is trained."""
import pytest

from fintune.registry import UnknownNameError
from fintune.templates import FAMILIES, detect, tokenize_example

MSGS = [{"role": "user", "content": "What is 2% of 50?"},
        {"role": "assistant", "content": "2% × 50 = 1\nFinal answer: 1"}]


def test_chatml_mask_is_exactly_the_assistant_reply(tokenizer):
    fam = detect(tokenizer.chat_template)
    assert fam.name == "chatml"
    ex = tokenize_example(tokenizer, fam, MSGS)
    ids, labels = ex["input_ids"], ex["labels"]
    assert len(ids) == len(labels)
    first = next(i for i, l in enumerate(labels) if l != -100)
    assert all(l == -100 for l in labels[:first])
    assert labels[first:] == ids[first:]
    trained = tokenizer.decode(ids[first:])
    assert trained.startswith("2% × 50 = 1") and "<|im_end|>" in trained
    prompt = tokenizer.decode(ids[:first])
    assert prompt.endswith("<|im_start|>assistant\n") and "What is 2% of 50?" in prompt


def test_no_double_bos(tokenizer):
    ex = tokenize_example(tokenizer, FAMILIES.get("chatml"), MSGS)
    # SmolLM2's BOS is <|im_start|>: exactly one per turn (system, user, assistant), none added twice
    assert ex["input_ids"].count(tokenizer.bos_token_id) == 3
    assert ex["input_ids"][0] == tokenizer.bos_token_id
    assert ex["input_ids"][1] != tokenizer.bos_token_id


def test_conversation_must_end_with_assistant(tokenizer):
    with pytest.raises(ValueError, match="assistant"):
        tokenize_example(tokenizer, FAMILIES.get("chatml"), MSGS[:1])


def test_unknown_template_lists_families():
    with pytest.raises(UnknownNameError) as e:
        detect("{{ messages }}")
    assert "chatml" in str(e.value) and "deepseek-r1" in str(e.value) and "llama3" in str(e.value)


class _FakeR1Tokenizer:
    """Renders like DeepSeek-R1's template: drops reasoning before </think> in
    assistant turns and ends the generation prompt with <think>\\n."""
    eos_token = "<\uff5cend\u2581of\u2581sentence\uff5c>"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        out = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"
        for m in messages:
            if m["role"] == "user":
                out += "<\uff5cUser\uff5c>" + m["content"]
            else:
                out += "<\uff5cAssistant\uff5c>" + m["content"].split("</think>")[-1] + self.eos_token
        if add_generation_prompt:
            out += "<\uff5cAssistant\uff5c><think>\n"
        return out


def test_r1_render_keeps_reasoning_the_template_would_drop():
    fam = FAMILIES.get("deepseek-r1")
    reply = {"role": "assistant", "content": "<think>\nrisk = 2% of 10,000 = 200\n</think>\nFinal answer: 200"}
    prompt, completion = fam.split(_FakeR1Tokenizer(), MSGS[:1], reply)
    assert prompt.endswith("<\uff5cAssistant\uff5c><think>\n")
    assert completion.startswith("risk = 2% of 10,000 = 200\n</think>")
    assert completion.endswith(_FakeR1Tokenizer.eos_token)


def test_real_r1_template_is_detected_and_masks_only_the_reply(r1_tokenizer):
    fam = detect(r1_tokenizer.chat_template)
    assert fam.name == "deepseek-r1"
    reply = {"role": "assistant", "content": "<think>\nrisk = 2% of 10,000 = 200\n</think>\nFinal answer: 200"}
    # the official template itself drops the reasoning: this is the trap
    assert "risk = 2%" not in r1_tokenizer.apply_chat_template(MSGS[:1] + [reply], tokenize=False)
    ex = tokenize_example(r1_tokenizer, fam, MSGS[:1] + [reply])
    ids, labels = ex["input_ids"], ex["labels"]
    first = next(i for i, l in enumerate(labels) if l != -100)
    assert labels[first:] == ids[first:] and all(l == -100 for l in labels[:first])
    assert r1_tokenizer.decode(ids[:first]).endswith("<\uff5cAssistant\uff5c>")
    trained = r1_tokenizer.decode(ids[first:])
    assert "risk = 2% of 10,000 = 200" in trained and trained.endswith(r1_tokenizer.eos_token)
    assert ids.count(r1_tokenizer.bos_token_id) == 1 and ids[0] == r1_tokenizer.bos_token_id


@pytest.mark.parametrize("tok_fixture", ["tokenizer", "r1_tokenizer"])
def test_unsloth_turn_markers_occur_in_the_rendered_template(tok_fixture, request):
    tok = request.getfixturevalue(tok_fixture)
    fam = detect(tok.chat_template)
    text = tok.apply_chat_template(MSGS, tokenize=False)
    assert fam.instruction_part in text and fam.response_part in text
    assert text.index(fam.instruction_part) < text.rindex(fam.response_part)
