"""Small language models (decoder-only, with a KV cache): export, generate, bench.

    from toolkit.lm.export import export_lm_onnx
    from toolkit.lm.generate import generate
    for piece in generate("exported/qwen2-onnx", "the cat", max_new_tokens=8):
        ...

An LM artifact folder holds `model.onnx` (optimum's text-generation-with-past graph:
input_ids, attention_mask, position_ids where the family uses them, past_key_values.N.key/value
in; logits and present.N.key/value out), the Hugging Face `config.json`, the tokenizer files
and `manifest.json` (with an `lm` record: layers, KV heads, head size, context length).
An LM exported with `--to tflite` holds `model.tflite` instead: litert-torch's `prefill_N` and
`decode` signatures over an external KV cache (`litert_export`, `litert_decoder`), run the same way.
"""
