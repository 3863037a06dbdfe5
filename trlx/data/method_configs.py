"""trlX-compatible import paths: `from trlx.data.method_configs import PPOConfig, SFTConfig, RFTConfig, ILQLConfig`.

trlx has one method section for every method (`method.name` picks it); `SFTConfig` is that section with
`name` defaulting to sft, so trlX's `SFTConfig(name="sftconfig", gen_kwargs=...)` builds the same config.
"""

from dataclasses import dataclass

from trlx.config import PPOConfig, doc


@dataclass
class SFTConfig(PPOConfig):
    name: str = doc("The method; `sft` (trlX's `sftconfig`).", "sft")


@dataclass
class RFTConfig(PPOConfig):
    name: str = doc("The method; `rft` (trlX's `rftconfig`).", "rft")


@dataclass
class ILQLConfig(PPOConfig):
    name: str = doc("The method; `ilql` (trlX's `ilqlconfig`).", "ilql")


__all__ = ["ILQLConfig", "PPOConfig", "RFTConfig", "SFTConfig"]
