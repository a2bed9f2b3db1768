"""tinker-cookbook's RL loop over mathrl's problems: a dataset builder for
``tinker_cookbook.rl.train.Config(dataset_builder=...)`` that serves any mathrl dataset (arith,
or a benchmark file in ``../shared/data``) as single-turn problems, prompted with mathrl's
prompt protocol and graded by mathrl's grader: the reward is 1 for a correct final answer, else
0 (the studies' reward). This is how a user offline runs the cookbook's own code: the data comes
from local files, not the hub.

Needs ``tinker-cookbook`` (installed with ``--no-deps``; see docs/tinker.md). With the ``qwen3``
renderer the prompt tokens are exactly those mathrl's own chat template gives a Qwen3 model
(the embedded tiny one included), so what the cookbook trains is what ``mathrl eval`` measures.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence

import chz
from tinker_cookbook import renderers, tokenizer_utils
from tinker_cookbook.rl.problem_env import ProblemEnv, ProblemGroupBuilder
from tinker_cookbook.rl.types import EnvGroupBuilder, RLDataset, RLDatasetBuilder

from mathrl.data import load_dataset
from mathrl.grading import Grader
from mathrl.prompts import PromptProtocol
from mathrl.types import Problem


def offline(model: str, tokenizer_folder: str | None = None) -> None:
    """Ready tinker-cookbook for a machine without the hub: its tokenizer lookup by ``model``'s
    name gets the local folder (``tokenizer_folder``, default what mathrl loads for ``model``), and
    the price list it fetches only for cost logging is not fetched."""
    import tinker_cookbook.utils.cost_estimation as cost_estimation
    from transformers import AutoTokenizer

    from mathrl.models import resolve_model

    folder = tokenizer_folder or str(resolve_model(model))
    tokenizer_utils.register_tokenizer(model, functools.cache(lambda: AutoTokenizer.from_pretrained(folder)))
    cost_estimation._pricing_fetched = True


class MathrlProblemEnv(ProblemEnv):
    """One problem: mathrl's prompt (the system message and any few-shot turns as the
    conversation's prefix, the question last), graded by mathrl's grader."""

    def __init__(self, problem: Problem, messages: list[dict], renderer, grader: Grader):
        super().__init__(renderer, convo_prefix=messages[:-1] or None, format_coef=0.0)
        self.problem, self.question, self.grader = problem, messages[-1]["content"], grader

    def get_question(self) -> str:
        return self.question

    def check_answer(self, sample_str: str) -> bool:
        return self.grader.grade(self.problem, [sample_str])[0].correct

    def check_format(self, sample_str: str) -> bool:
        return True  # the reward is correctness alone

    def get_reference_answer(self) -> str:
        return self.problem.answer


class MathrlProblems(RLDataset):
    """Batches of ``batch_size`` problems, each a group of ``group_size`` samples; a seeded
    permutation of the problems per epoch (as ``mathrl grpo`` orders them)."""

    def __init__(self, problems: Sequence[Problem], dataset: str, batch_size: int, group_size: int, renderer,
                 prompt: PromptProtocol, grader: Grader, seed: int, epochs: int = 1):
        self.problems, self.dataset = list(problems), dataset
        self.batch_size, self.group_size, self.epochs = batch_size, group_size, epochs
        self.renderer, self.prompt, self.grader, self.seed = renderer, prompt, grader, seed

    def batches_per_epoch(self) -> int:
        return max(1, len(self.problems) // self.batch_size)

    def __len__(self) -> int:  # the cookbook's loop runs min(len, max_steps) batches
        return self.epochs * self.batches_per_epoch()

    def get_batch(self, index: int) -> Sequence[EnvGroupBuilder]:
        epoch, index = divmod(index, self.batches_per_epoch())
        order = list(range(len(self.problems)))
        random.Random(f"cookbook/{self.seed}/{epoch}").shuffle(order)
        batch = [self.problems[i] for i in order[index * self.batch_size:(index + 1) * self.batch_size]]
        def env(p: Problem):
            messages = self.prompt.messages(p, self.dataset)
            return functools.partial(MathrlProblemEnv, p, messages, self.renderer, self.grader)

        return [ProblemGroupBuilder(env_thunk=env(p), num_envs=self.group_size, dataset_name=self.dataset)
                for p in batch]


@chz.chz
class MathrlProblemsBuilder(RLDatasetBuilder):
    """``dataset``: a mathrl dataset name or file (``arith_train``, ``math_hard``, ...);
    ``model_name_for_tokenizer``: the base model's tokenizer (a local folder works offline)."""

    model_name_for_tokenizer: str
    dataset: str = "arith_train"
    renderer_name: str = "qwen3"
    batch_size: int = 16
    group_size: int = 8
    num_problems: int | None = None
    levels: str | None = None  # e.g. "1,2,3"
    epochs: int = 1
    data_dir: str | None = None
    seed: int = 0

    async def __call__(self) -> tuple[RLDataset, RLDataset | None]:
        tokenizer = tokenizer_utils.get_tokenizer(self.model_name_for_tokenizer)
        renderer = renderers.get_renderer(self.renderer_name, tokenizer=tokenizer)
        levels = [int(x) for x in self.levels.split(",")] if self.levels else None
        data = load_dataset(self.dataset, self.data_dir, levels=levels, num_problems=self.num_problems,
                            seed=self.seed)
        grader = Grader(data.extract, processes=0)
        return (MathrlProblems(data.problems, data.name, self.batch_size, self.group_size, renderer,
                               PromptProtocol(), grader, self.seed, self.epochs), None)
