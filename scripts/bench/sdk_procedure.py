#!/usr/bin/env python3
"""The documented Azure ML storage-key procedure, done with the Azure ML Python SDK v2.

This is the baseline keysync's benchmark (issue 8) compares with: what an Azure ML user does
by hand after regenerating a storage account key, following Microsoft's "Regenerate storage
account access keys" page for Azure Machine Learning, with `azure-ai-ml`:

1. Read the account's keys with ARM `listKeys`, as `az storage account keys list` does, and
   take the newest one (largest `creationTime`; key1 when no key has one). The key never
   comes through the command line and is never printed.
2. In every workspace of the given subscriptions, list the datastores and re-register each
   AccountKey datastore on the account with the new key: the datastore as the SDK listed it,
   with its credentials replaced, through `MLClient.create_or_update`.
3. Sync the keys of every workspace whose default storage is the account
   (`workspaces.begin_sync_keys`), waiting for each long-running operation to finish.

The SDK is pointed at the ARM endpoint with `AZUREML_DEV_URL_MFE` (read when an `MLClient` is
made); token scopes stay those of the public cloud (`https://management.azure.com/.default`).
The credential is `azure.identity.ManagedIdentityCredential`, which finds an App Service-style
identity endpoint in `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`. The endpoint must be https:
azure-core refuses to send a bearer token over plain http. Trust for a private certificate
comes from `REQUESTS_CA_BUNDLE` (or `--ca-bundle`, which sets it).

Prints one JSON object on stdout (see `Outcome.to_json`) and exits 1 when anything failed,
2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, List, Optional
from urllib.parse import urlsplit

#: The Azure SDKs log request details at INFO; the procedure keeps them at WARNING.
AZURE_LOGGERS = ("azure", "azure.ai.ml", "azure.identity", "azure.core", "msal", "urllib3")

#: The variable the Azure ML SDK takes its management endpoint from.
SDK_ENDPOINT_ENV = "AZUREML_DEV_URL_MFE"

#: The storage api-version of the keys call (the one keysync and its emulator pin).
STORAGE_API_VERSION = "2025-08-01"

#: ARM's token scope; the SDK asks for the same one.
ARM_SCOPE = "https://management.azure.com/.default"

#: Where ManagedIdentityCredential finds an App Service-style identity endpoint.
IDENTITY_ENV = ("IDENTITY_ENDPOINT", "IDENTITY_HEADER")

#: Hosts that never go through a proxy from the environment.
LOOPBACK = ("127.0.0.1", "localhost", "::1")

#: The longest error message kept in the output.
MESSAGE_LIMIT = 400


@dataclass
class Outcome:
    """What the procedure did, as the benchmark reads it."""

    account: str
    key_name: Optional[str] = None
    wall_seconds: float = 0.0
    #: Of the wall time, the time spent in `begin_sync_keys(...).result()`: the resync's requests
    #: and the poller's waits between them.
    sync_seconds: float = 0.0
    #: Of that, the time azure-core's poller spent asleep between polls, and how often it slept.
    poller_wait_seconds: float = 0.0
    poller_waits: int = 0
    datastores: List[str] = field(default_factory=list)
    workspaces: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)

    def to_json(self) -> dict:
        """The output object; names are `workspace/datastore` and workspace names."""
        return {
            "tool": "azure-ai-ml",
            "sdkVersion": sdk_version(),
            "account": self.account,
            "keyName": self.key_name,
            "wallSeconds": round(self.wall_seconds, 3),
            "syncSeconds": round(self.sync_seconds, 3),
            "pollerWaitSeconds": round(self.poller_wait_seconds, 3),
            "pollerWaits": self.poller_waits,
            "datastoresReregistered": self.datastores,
            "workspacesSynced": self.workspaces,
            "errors": self.errors,
        }


class Redactor:
    """Turns exceptions into short messages that never carry a secret seen by the script."""

    def __init__(self) -> None:
        self._secrets: List[str] = []

    def add(self, secret: str) -> None:
        if secret:
            self._secrets.append(secret)

    def describe(self, context: str, error: BaseException) -> str:
        text = " ".join(str(error).split()) or type(error).__name__
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        if len(text) > MESSAGE_LIMIT:
            text = text[:MESSAGE_LIMIT] + "..."
        return f"{context}: {type(error).__name__}: {text}"


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Re-register a storage account's AccountKey datastores and sync "
        "workspace keys with the Azure ML Python SDK, as the documented procedure does."
    )
    parser.add_argument(
        "--arm-endpoint",
        required=True,
        help="the ARM endpoint, https (e.g. https://127.0.0.1:PORT for the emulator)",
    )
    parser.add_argument(
        "--subscription",
        required=True,
        action="append",
        help="a subscription id to search (repeat, or separate with commas)",
    )
    parser.add_argument(
        "--account", required=True, help="the storage account name whose key was regenerated"
    )
    parser.add_argument(
        "--ca-bundle",
        help="a PEM file of certificates to trust (sets REQUESTS_CA_BUNDLE)",
    )
    args = parser.parse_args(argv)
    if urlsplit(args.arm_endpoint).scheme != "https":
        parser.error("--arm-endpoint must be an https URL: the SDK sends tokens only over TLS")
    missing = [name for name in IDENTITY_ENV if not os.environ.get(name)]
    if missing:
        # Without them ManagedIdentityCredential would wait for an IMDS that is not there.
        parser.error(f"set {' and '.join(missing)}: the managed identity endpoint to use")
    args.subscription = [s.strip() for v in args.subscription for s in v.split(",") if s.strip()]
    return args


def quiet_azure_logging() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for name in AZURE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def bypass_proxies_for_loopback(*urls: str) -> None:
    """A local endpoint is reached directly even when HTTPS_PROXY is set for the machine."""
    hosts = [urlsplit(u).hostname for u in urls]
    local = [h for h in hosts if h in LOOPBACK]
    if not local:
        return
    for name in ("NO_PROXY", "no_proxy"):
        current = [h for h in os.environ.get(name, "").split(",") if h]
        os.environ[name] = ",".join(current + [h for h in local if h not in current])


def sdk_version() -> Optional[str]:
    try:
        from importlib.metadata import version

        return version("azure-ai-ml")
    except Exception:  # the version is informative only
        return None


class Arm:
    """The two storage calls the procedure needs besides the SDK, on azure-core's pipeline
    (retries, bearer tokens, ARM's logging policy), as the Azure CLI makes them."""

    def __init__(self, endpoint: str, credential: Any) -> None:
        from azure.core.pipeline.policies import HeadersPolicy, RetryPolicy, UserAgentPolicy
        from azure.mgmt.core import ARMPipelineClient
        from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy, ARMHttpLoggingPolicy

        policies = [
            HeadersPolicy(),
            UserAgentPolicy(sdk_moniker="keysync-bench-sdk-procedure"),
            RetryPolicy(),
            ARMChallengeAuthenticationPolicy(credential, ARM_SCOPE),
            ARMHttpLoggingPolicy(),
        ]
        self._endpoint = endpoint.rstrip("/")
        self._client = ARMPipelineClient(base_url=self._endpoint, policies=policies)

    def _send(self, method: str, url: str) -> Any:
        from azure.core.exceptions import HttpResponseError
        from azure.core.rest import HttpRequest

        response = self._client.send_request(HttpRequest(method, url))
        if response.status_code >= 400:
            raise HttpResponseError(response=response)
        return response.json()

    def find_account(self, subscriptions: Iterable[str], name: str) -> dict:
        """The account named `name` in the subscriptions (`StorageAccounts_List`, paged)."""
        for subscription in subscriptions:
            url: Optional[str] = (
                f"{self._endpoint}/subscriptions/{subscription}/providers/"
                f"Microsoft.Storage/storageAccounts?api-version={STORAGE_API_VERSION}"
            )
            while url:
                page = self._send("GET", url)
                for account in page.get("value", []):
                    if str(account.get("name", "")).lower() == name.lower():
                        return account
                url = page.get("nextLink")
        raise LookupError(f"no storage account named {name} in the given subscriptions")

    def newest_key(self, account_id: str) -> tuple:
        """`(keyName, value)` of the newest key (`StorageAccounts_ListKeys`); key1 when no key
        has a `creationTime`. Kerberos keys are not account keys and are left out."""
        url = f"{self._endpoint}{account_id}/listKeys?api-version={STORAGE_API_VERSION}"
        keys = [
            k
            for k in self._send("POST", url).get("keys", [])
            if str(k.get("keyName", "")).lower() in ("key1", "key2") and k.get("value")
        ]
        if not keys:
            raise LookupError("listKeys returned no account keys")
        dated = [k for k in keys if k.get("creationTime")]
        if dated:
            chosen = max(dated, key=lambda k: parse_time(k["creationTime"]))
        else:
            chosen = next((k for k in keys if k["keyName"].lower() == "key1"), keys[0])
        return chosen["keyName"], chosen["value"]


def time_poller_waits(outcome: Outcome) -> None:
    """Adds every sleep of azure-core's long-running-operation poller (ARMPolling's, inherited
    from LROBasePolling) to `outcome`, so that the benchmark can tell the poller's waits from the
    requests. The sleep itself is unchanged: the delay is the one azure-core chose."""
    from azure.core.polling.base_polling import LROBasePolling

    sleep = LROBasePolling._sleep
    lock = threading.Lock()

    def timed_sleep(polling: Any, delay: float) -> None:
        started = time.monotonic()
        try:
            sleep(polling, delay)
        finally:
            with lock:
                outcome.poller_wait_seconds += time.monotonic() - started
                outcome.poller_waits += 1

    LROBasePolling._sleep = timed_sleep


def parse_time(text: str) -> float:
    from datetime import datetime

    # Azure writes up to seven fractional digits, more than Python parses.
    head, _, rest = text.replace("Z", "+00:00").partition(".")
    if rest:
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        head = f"{head}.{digits[:6]}{zone}"
    return datetime.fromisoformat(head).timestamp()


def same_id(a: Optional[str], b: Optional[str]) -> bool:
    return bool(a and b) and a.strip("/").lower() == b.strip("/").lower()


class Procedure:
    """The SDK steps, with what they did recorded in an `Outcome`."""

    def __init__(self, credential: Any, outcome: Outcome, redactor: Redactor) -> None:
        self._credential = credential
        self._outcome = outcome
        self._redactor = redactor

    def _client(self, subscription: str, group: Optional[str] = None, workspace: Optional[str] = None):
        from azure.ai.ml import MLClient

        return MLClient(
            self._credential,
            subscription_id=subscription,
            resource_group_name=group,
            workspace_name=workspace,
            show_progress=False,
            enable_telemetry=False,
        )

    def run(self, subscriptions: List[str], account: dict, key: str) -> None:
        to_sync = []
        for subscription in subscriptions:
            for workspace in self._client(subscription).workspaces.list(scope="subscription"):
                client = self._client(subscription, workspace.resource_group, workspace.name)
                self._reregister(client, workspace.name, account["name"], key)
                if same_id(workspace.storage_account, account["id"]):
                    to_sync.append((client, workspace.name))
        # Last, so that each workspace reads its default datastores' new key.
        for client, name in to_sync:
            self._sync(client, name)

    def _reregister(self, client: Any, workspace: str, account: str, key: str) -> None:
        from azure.ai.ml.entities import AccountKeyConfiguration

        try:
            datastores = list(client.datastores.list())
        except Exception as error:
            self._fail(f"listing the datastores of {workspace}", error)
            return
        for datastore in datastores:
            on_account = str(getattr(datastore, "account_name", "") or "").lower() == account.lower()
            if not on_account or not isinstance(datastore.credentials, AccountKeyConfiguration):
                continue
            datastore.credentials = AccountKeyConfiguration(account_key=key)
            try:
                client.create_or_update(datastore)
                self._outcome.datastores.append(f"{workspace}/{datastore.name}")
            except Exception as error:
                self._fail(f"re-registering {workspace}/{datastore.name}", error)

    def _sync(self, client: Any, workspace: str) -> None:
        started = time.monotonic()
        try:
            client.workspaces.begin_sync_keys(workspace).result()
            self._outcome.workspaces.append(workspace)
        except Exception as error:
            self._fail(f"syncing the keys of {workspace}", error)
        finally:
            self._outcome.sync_seconds += time.monotonic() - started

    def _fail(self, context: str, error: BaseException) -> None:
        self._outcome.errors.append(self._redactor.describe(context, error))


def run(args: argparse.Namespace, outcome: Outcome, redactor: Redactor) -> None:
    from azure.identity import ManagedIdentityCredential

    if args.ca_bundle:
        os.environ["REQUESTS_CA_BUNDLE"] = args.ca_bundle
    os.environ[SDK_ENDPOINT_ENV] = args.arm_endpoint.rstrip("/")
    bypass_proxies_for_loopback(args.arm_endpoint, os.environ["IDENTITY_ENDPOINT"])
    credential = ManagedIdentityCredential()
    time_poller_waits(outcome)
    # The SDK's modules take over a second to import; the procedure's time starts after that,
    # at its first request, as a user's session would have them loaded already.
    import azure.ai.ml.entities  # noqa: F401
    import azure.mgmt.core  # noqa: F401
    from azure.ai.ml import MLClient  # noqa: F401

    started = time.monotonic()
    try:
        arm = Arm(args.arm_endpoint, credential)
        account = arm.find_account(args.subscription, args.account)
        outcome.key_name, key = arm.newest_key(account["id"])
        redactor.add(key)
        Procedure(credential, outcome, redactor).run(args.subscription, account, key)
    finally:
        outcome.wall_seconds = time.monotonic() - started


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    quiet_azure_logging()
    outcome = Outcome(account=args.account)
    redactor = Redactor()
    try:
        run(args, outcome, redactor)
    except Exception as error:
        outcome.errors.append(redactor.describe("the procedure stopped", error))
    print(json.dumps(outcome.to_json()))
    return 1 if outcome.errors else 0


if __name__ == "__main__":
    sys.exit(main())
