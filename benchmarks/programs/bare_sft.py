"""A bare TRL SFTTrainer script doing the framework's distill stage's work: load, train, save the adapter, merge it,
save the checkpoint. Prints {"seconds"}.

    python -m benchmarks.programs.bare_sft INSTRUCT PAIRS SFT_JSON LORA_JSON OUT
"""

import json
import sys
import time

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer


def main(instruct: str, pairs: str, sft_json: str, lora_json: str, out: str) -> None:
    sft, lora = json.loads(sft_json), json.loads(lora_json)
    t0 = time.perf_counter()  # from here on, the same work as the framework's distill stage
    tok = AutoTokenizer.from_pretrained(instruct)
    with open(pairs) as f:
        rows = [json.loads(row) for row in f]
    ds = Dataset.from_list([{"prompt": tok.apply_chat_template([{"role": "user", "content": r["prompt"]}],
                                                               add_generation_prompt=True, tokenize=False),
                             "completion": r["completion"]} for r in rows])
    model = AutoModelForCausalLM.from_pretrained(instruct, dtype=torch.float32)
    args = SFTConfig(output_dir=out + "/sft", report_to=[], save_strategy="no", seed=11, data_seed=11, use_cpu=True,
                     bf16=False, **sft)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                         peft_config=LoraConfig(**lora))
    trainer.train()
    trainer.model.save_pretrained(out + "/adapter")
    merged = trainer.model.merge_and_unload()  # the checkpoint mergekit reads next
    merged.save_pretrained(out + "/model")
    tok.save_pretrained(out + "/model")
    print(json.dumps({"seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main(*sys.argv[1:6])
