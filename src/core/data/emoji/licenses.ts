/** LICENSES.md of an emoji data set: which images come from which set, under which licence, by whom. */
import { EmojiSet } from './sets';

export function licensesMarkdown(sets: readonly EmojiSet[], pairsByStyle: ReadonlyMap<string, number>): string {
  const lines = [
    '# Licences of this data set',
    '',
    'Every image here is an emoji from an openly licensed set, rendered from the SVG data of its npm package by',
    '`dalle dataset emoji`. A caption ending in "<style> style" names the set its image comes from. The images are',
    'adaptations of the original artwork (rasterised, flattened onto white, resized); each set\'s licence applies to',
    'the images of that set, and the attribution below must be kept when the images are shared.',
    '',
  ];
  for (const set of sets) {
    const license = set.license;
    const images = pairsByStyle.get(set.spec.style) ?? 0;
    lines.push(
      `## ${set.title} ("${set.spec.style} style", ${images} image${images === 1 ? '' : 's'})`,
      '',
      `- Source: npm package \`${set.packageName}@${set.version}\``,
      `- Author: ${set.author.name}${set.author.url === undefined ? '' : ` (${set.author.url})`}`,
      `- Licence: ${license.title}${license.spdx === undefined ? '' : ` (SPDX: ${license.spdx})`}` +
        `${license.url === undefined ? '' : `, ${license.url}`}`,
      ...licenseNote(license.spdx),
      '',
    );
  }
  return lines.join('\n');
}

/** What each licence asks of someone who shares the images (a summary; the licence text is authoritative). */
function licenseNote(spdx: string | undefined): string[] {
  switch (spdx) {
    case 'CC-BY-4.0':
      return ['- Sharing these images requires attribution to the author and a link to the licence.'];
    case 'CC-BY-SA-4.0':
      return [
        '- Sharing these images requires attribution and a link to the licence; adaptations of them must be shared',
        '  under CC BY-SA 4.0 as well (ShareAlike).',
      ];
    case 'Apache-2.0':
      return ['- Redistribution must include a copy of the Apache License 2.0 and keep the attribution notices.'];
    case 'MIT':
      return ['- Redistribution must include the MIT copyright and permission notice of the author.'];
    default:
      return [];
  }
}
