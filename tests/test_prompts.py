from rlhfkit.data.prompts import PromptEncoder
from rlhfkit.data.records import Message

USER = (Message("user", "Summarize: the cat sat on the mat."),)


def test_instruction_goes_before_the_last_user_turn(tokenizer):
    encoder = PromptEncoder(tokenizer, instruction="Summarize in less than 50 words.")
    convo = (Message("user", "first"), Message("assistant", "ok"), Message("user", "second"))
    out = encoder.with_instruction(convo)
    assert out[0].content == "first"
    assert out[2].content == "Summarize in less than 50 words.\n\nsecond"
    assert encoder.with_instruction(convo) is not convo  # input left untouched
    assert convo[2].content == "second"


def test_chat_template_is_applied_with_the_generation_prompt(tokenizer):
    text = PromptEncoder(tokenizer).render(USER)
    assert text.startswith("<|im_start|>system\n")
    assert "<|im_start|>user\nSummarize: the cat sat on the mat.<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_plain_rendering_without_the_template(tokenizer):
    encoder = PromptEncoder(tokenizer, use_chat_template=False)
    assert encoder.render(USER) == "Summarize: the cat sat on the mat."
    convo = (Message("user", "hi"), Message("assistant", "hello"), Message("user", "bye"))
    assert encoder.render(convo) == "User: hi\n\nAssistant: hello\n\nUser: bye\n\nAssistant:"


def test_short_prompt_is_not_cut_and_not_counted(tokenizer):
    encoder = PromptEncoder(tokenizer, prompt_sequence_length=512)
    encoded = encoder.encode_prompt(USER)
    assert not encoded.truncated
    assert tokenizer.decode(encoded.ids) == encoder.render(USER)
    assert (encoder.counts.prompts, encoder.counts.prompts_seen) == (0, 1)


def test_long_prompt_is_cut_inside_its_text_and_counted(tokenizer):
    document = " ".join(f"sentence number {i} about the harbour." for i in range(200))
    encoder = PromptEncoder(tokenizer, instruction="Summarize briefly.", prompt_sequence_length=64)
    encoded = encoder.encode_prompt((Message("user", document),))
    assert encoded.truncated and encoded.full_length > 64
    assert 56 <= len(encoded.ids) <= 64
    text = tokenizer.decode(encoded.ids)
    assert "Summarize briefly.\n\nsentence number 0" in text  # instruction and start kept
    assert text.endswith("<|im_start|>assistant\n")  # the turn marker survives
    assert "sentence number 199" not in text
    assert encoder.counts.prompts == 1


def test_response_gets_eos_and_is_cut_at_the_limit(tokenizer):
    encoder = PromptEncoder(tokenizer, target_sequence_length=4)
    short = encoder.encode_response("Hi.")
    assert short.ids[-1] == tokenizer.eos_token_id and not short.truncated
    long = encoder.encode_response("one two three four five six seven")
    assert len(long.ids) == 4 and long.truncated
    assert (encoder.counts.responses, encoder.counts.responses_seen) == (1, 2)
    assert "1/1 prompts" not in encoder.counts.summary(512, 4)
    assert "1/2 responses cut to target_sequence_length=4" in encoder.counts.summary(512, 4)
