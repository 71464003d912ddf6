"""Where a caller's results go: ``GATEWAY_WEBHOOK_URL``/``GATEWAY_WEBHOOK_SECRET``, or the API key's own
``webhook_url``/``webhook_secret`` (either one overrides the default's). Checked once, at startup: a URL
without a secret, or a secret that is not ``whsec_<base64>``, stops the gateway (never echoing it)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.bounds import http_url_problem
from gateway.settings import Settings, SettingsError
from gateway.webhooks.signing import WebhookSigner, signer_from


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    url: str
    signer: WebhookSigner


def _target(url: str, signer: WebhookSigner | None, where: str) -> WebhookTarget | None:
    if not url:
        return None
    # The scheme alone let a port past 65535 or no host through: every POST failed, after ready.
    if problem := http_url_problem(url):
        raise SettingsError(f"{where}: {problem}")
    if signer is None:
        raise SettingsError(f"{where}: a webhook URL needs a secret (whsec_<base64>) to sign with")
    return WebhookTarget(url, signer)


class WebhookTargets:
    def __init__(self, default: WebhookTarget | None, by_key: dict[str, WebhookTarget | None]) -> None:
        self.default = default
        self._by_key = by_key

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookTargets:
        try:
            secret = signer_from(settings.webhook_secret, "GATEWAY_WEBHOOK_SECRET")
            default = _target(settings.webhook_url, secret, "GATEWAY_WEBHOOK_URL")
            by_key: dict[str, WebhookTarget | None] = {}
            for spec in settings.api_keys:
                if spec.webhook_url is None and spec.webhook_secret is None:
                    continue
                where = f"GATEWAY_API_KEYS[{spec.name}]"
                own = signer_from(spec.webhook_secret, f"{where}.webhook_secret")
                url = settings.webhook_url if spec.webhook_url is None else spec.webhook_url
                by_key[spec.name] = _target(url, own or secret, f"{where}.webhook_url")
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        return cls(default, by_key)

    @property
    def receivers(self) -> int:
        """How many distinct receivers (URLs) results may go to."""
        targets = [self.default, *self._by_key.values()]
        return len({target.url for target in targets if target is not None})

    def for_key(self, key: str | None) -> WebhookTarget | None:
        """The target of ``key`` (an API key's name), else the default; None: results go nowhere."""
        if key is not None and key in self._by_key:
            return self._by_key[key]
        return self.default
