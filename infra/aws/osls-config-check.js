'use strict';
// osls plugin: validate the configuration the functions will load, every section (as the worker
// does), before anything is packaged or deployed. The api function validates only the sections it
// reads at its cold start (core.config.ApiSettings), so this is where a broken routing, model or
// retrieval section is caught: `osls package` / `osls deploy` stop with the config error instead.
// It runs `alto config check --bundle` (as infra/*/deploy.sh do, and checking the bundle holds what the
// configuration needs) with the Lambda's Python on the requirements serverless-python-requirements just
// installed and nothing else (-S: not the host's site-packages), and the ALTO_* environment the functions get.
const { execFileSync } = require('child_process');
const path = require('path');

const CONFIG_ERROR = 2; // core.entrypoints.cli's exit status for an AltoError

class ConfigCheck {
  constructor(serverless) {
    this.serverless = serverless;
    this.hooks = { 'before:package:createDeploymentArtifacts': () => this.check() };
  }

  check() {
    const service = this.serverless.service;
    const environment = (service.provider && service.provider.environment) || {};
    const config = environment.ALTO_CONFIG;
    if (!config) return;
    // the functions' ALTO_* values that are plain strings (overrides such as ALTO_QUEUE__MAX_RECEIVES),
    // never the deploying shell's own
    const own = Object.entries(process.env).filter(([k]) => !k.startsWith('ALTO_'));
    const functions = Object.entries(environment).filter(([k, v]) => k.startsWith('ALTO_') && typeof v === 'string');
    const python = (service.custom && service.custom.bytecode && service.custom.bytecode.python) || 'python3.12';
    const root = this.serverless.config.servicePath;
    try {
      // --skip-secrets: the deploying machine doesn't hold the functions' secrets (Secrets Manager does)
      const args = ['-S', '-m', 'core.entrypoints.cli', '--config', config, 'config', 'check', '--skip-secrets', '--bundle'];
      execFileSync(python, args, {
        cwd: root,
        stdio: ['ignore', 'ignore', 'pipe'],
        env: { ...Object.fromEntries([...own, ...functions]),
               PYTHONPATH: [path.join(root, '.serverless', 'requirements'), root].join(path.delimiter),
               PYTHONDONTWRITEBYTECODE: '1' },  // never write .pyc into the shared requirements folder
      });
    } catch (e) {
      const detail = e.stderr ? e.stderr.toString().trim() : e.message;
      if (e.status === CONFIG_ERROR && detail.includes("'cryptography'")) {
        throw new this.serverless.classes.Error(
          `${config} has a safety policy that redacts, and this bundle has no vault cipher:\n${detail}\n` +
          'package the safety bundle: --param="bundle=safety" (adapters/aws/requirements-safety.txt), with the ' +
          "vault's key in Secrets Manager as altostratus/vault-key");
      }
      if (e.status === CONFIG_ERROR) {
        throw new this.serverless.classes.Error(`${config} is not a valid Altostratus configuration:\n${detail}`);
      }
      throw new this.serverless.classes.Error(
        `could not check ${config} with ${python} (it needs the requirements serverless-python-requirements ` +
        `installed, so list osls-config-check after it in serverless.yml):\n${detail}`);
    }
    console.log(`altostratus: ${config} is valid`);
  }
}

module.exports = ConfigCheck;
